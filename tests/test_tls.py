"""HTTPS for `cairn serve`: a self-signed certificate made once per data directory, or one given to it;
plain HTTP redirected; the session cookie marked Secure; the key never readable by others."""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
from pathlib import Path

from appliance.tls import Tls, ensure_certificate

from .served import served
from .servers import free_port
from .test_backup_restore import CAIRN


def _context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))  # the made certificate, trusted as its own CA


def _ask(conn: http.client.HTTPConnection, method: str, path: str, body: str | None = None,
         **headers: str) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """One request on its own connection, read whole and closed: (status, headers, body)."""
    try:
        conn.request(method, path, body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


def _get(port: int, path: str, cert: Path, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return _ask(http.client.HTTPSConnection("127.0.0.1", port, context=_context(cert), timeout=30), "GET", path,
                **headers)  # fmt: skip


def test_first_start_makes_a_certificate_serves_https_and_redirects_plain_http(tmp_path: Path) -> None:
    data, plain = tmp_path / "data", free_port()
    with served(data, tmp_path / "serve.log", "--http-redirect", f"127.0.0.1:{plain}", tls=True) as server:
        tls = Tls(data / "tls" / "cert.pem", data / "tls" / "key.pem")
        assert (data / "tls").stat().st_mode & 0o777 == 0o700 and tls.key.stat().st_mode & 0o777 == 0o600
        assert tls.fingerprint() in server.log.read_text() and server.url.startswith("https://")
        port = int(server.url.rsplit(":", 1)[1])
        status, _, body = _get(port, "/login", tls.cert)
        assert status == 200 and b"Sign in" in body
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=_context(tls.cert), timeout=30)
        login = json.dumps({"name": "admin", "password": server.password})
        status, headers, _ = _ask(conn, "POST", "/api/v1/login", login, **{"Content-Type": "application/json"})
        assert status == 200 and "; Secure" in headers.get("Set-Cookie", "")
        auth = base64.b64encode(f"admin:{server.password}".encode()).decode()
        status, _, body = _get(port, "/dav/", tls.cert, Authorization=f"Basic {auth}")
        assert status == 200 and b"Map network drive" in body  # the share over HTTPS too
        moved = http.client.HTTPConnection("127.0.0.1", plain, timeout=30)
        status, headers, _ = _ask(moved, "GET", "/jobs?limit=5", Host=f"127.0.0.1:{plain}")
        assert status == 308 and headers["Location"] == f"https://127.0.0.1:{port}/jobs?limit=5"
        odd = http.client.HTTPConnection("127.0.0.1", plain, timeout=30)
        assert _ask(odd, "GET", "/", Host='evil"<x>')[1]["Location"] == f"https://localhost:{port}/"
        refused = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/"],
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
        assert refused.stdout != "200"  # no plain HTTP on the HTTPS port
        # The CLI against it: told to trust the appliance's own certificate, or refused in words.
        env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
        (tmp_path / "pw").write_text(server.password)
        add = [*CAIRN, "remote", "add", "box", server.url, "--user", "admin", "--password-file", str(tmp_path / "pw")]
        untrusted = subprocess.run(add, capture_output=True, text=True, env=env, timeout=60)
        assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        assert "Traceback" not in untrusted.stderr
        trusted = subprocess.run(
            [*add, "--ca-cert", str(tls.cert)], capture_output=True, text=True, env=env, timeout=60
        )
        assert trusted.returncode == 0, trusted.stderr
        listed = subprocess.run([*CAIRN, "--remote", "box", "source", "list", "--json"], capture_output=True, text=True,
                                env=env, timeout=60)  # fmt: skip
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
        first = tls.fingerprint()
    with served(data, tmp_path / "again.log", tls=True) as server:
        assert Tls(data / "tls" / "cert.pem", data / "tls" / "key.pem").fingerprint() == first  # made once
        assert first in server.log.read_text()


def test_a_given_certificate_is_served(tmp_path: Path) -> None:
    given = ensure_certificate(tmp_path / "elsewhere", "127.0.0.1")
    data = tmp_path / "data"
    extra = ("--tls-cert", str(given.cert), "--tls-key", str(given.key))
    with served(data, tmp_path / "serve.log", *extra, tls=True) as server:
        assert given.fingerprint() in server.log.read_text() and not (data / "tls").exists()
        port = int(server.url.rsplit(":", 1)[1])
        assert _get(port, "/login", given.cert)[0] == 200
    lone = subprocess.run([*CAIRN, "--data", str(data), "serve", "--listen", f"127.0.0.1:{free_port()}",
                           "--tls-cert", str(given.cert)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert lone.returncode == 1 and "--tls-cert and --tls-key together" in lone.stderr
