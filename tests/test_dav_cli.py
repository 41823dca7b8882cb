"""`cairn dav` and `cairn dav-user` as a user runs them: a real process, stopped by SIGTERM."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .davshare import basic
from .servers import free_port

CAIRN = [sys.executable, "-c", "from appliance.cli import main; main()"]


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert proc.poll() is None, proc.communicate()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("cairn dav did not start listening")


def test_cairn_dav_serves_until_sigterm(tmp_path: Path) -> None:
    users, data = tmp_path / "users", tmp_path / "data"
    add = subprocess.run([*CAIRN, "dav-user", str(users), "bob", "--password-stdin"], input=b"s3cret\n")
    assert add.returncode == 0
    assert users.read_text().startswith("bob:scrypt$") and b"s3cret" not in users.read_bytes()
    subprocess.run([*CAIRN, "--data", str(data), "source", "add", "h1"], check=True, capture_output=True)
    port = free_port()
    cmd = [*CAIRN, "dav", "--data", str(data), "--listen", f"127.0.0.1:{port}", "--users", str(users)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("PUT", "/h1/current/f", b"hello", {"Authorization": basic("bob", "s3cret")})
        assert conn.getresponse().status == 201
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    show = subprocess.run([*CAIRN, "--data", str(data), "snapshot", "create", "h1", "s1"], capture_output=True)
    assert show.returncode == 0, show.stderr
    listing = subprocess.run([*CAIRN, "--data", str(data), "snapshot", "show", "h1", "s1", "--json"],
                             capture_output=True, text=True)  # fmt: skip
    assert '"path": "f"' in listing.stdout and '"size": 5' in listing.stdout


def test_cairn_dav_refuses_to_serve_without_users(tmp_path: Path) -> None:
    run = subprocess.run([*CAIRN, "--data", str(tmp_path), "dav", "--listen", "127.0.0.1:1"], capture_output=True)
    assert run.returncode == 2 and b"--users" in run.stderr
    run = subprocess.run([*CAIRN, "--data", str(tmp_path), "dav", "--listen", "nonsense", "--anonymous"],
                         capture_output=True)  # fmt: skip
    assert run.returncode == 2 and b"HOST:PORT" in run.stderr
