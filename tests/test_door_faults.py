"""Sessions that go wrong: a client killed mid-transfer, maintenance mode mid-transfer, the appliance restarted.

Each ends with a clear message on the client, a failed session with its
reason, no snapshot from it, and the committed snapshots as they were.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .doors import PASSWORD, Appliance, prepare, serving
from .test_backup_restore import cairn

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the front doors run as root")  # CI runs as root
SLOW = "--bwlimit=256"  # KiB/s: the 8 MiB file takes half a minute, time enough to break in


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Appliance]:
    with serving(prepare(tmp_path, ("laptop",)), tmp_path / "serve.log") as a:
        yield a


def committed(app: Appliance, tmp: Path) -> dict[str, Any]:
    """A first backup and its snapshot: what no later failure may change."""
    first = tmp / "first"
    first.mkdir(exist_ok=True)
    (first / "kept").write_text("kept")
    assert app.rsync_ssh("laptop", f"{first}/").returncode == 0
    (session,) = app.ended("laptop")
    return snapshot_state(app, session["snapshot"])


def snapshot_state(app: Appliance, name: str) -> dict[str, Any]:
    snap = app.mnt / "laptop" / "snapshots" / name
    return {"names": [s["name"] for s in app.snapshots("laptop")],
            "files": {p.name: p.read_bytes() for p in snap.iterdir()}}  # fmt: skip


def slow_client(app: Appliance, tmp: Path, *, daemon: bool = False) -> subprocess.Popen[str]:
    big = tmp / "big"
    big.mkdir(exist_ok=True)
    (big / "file").write_bytes(os.urandom(8 << 20))
    if daemon:
        argv = ["rsync", "-a", SLOW, f"{big}/", app.daemon_url("laptop")]
    else:
        argv = ["rsync", "-a", SLOW, "-e", app.ssh("laptop"), f"{big}/", "cairn@127.0.0.1:"]
    env = {**os.environ, "RSYNC_PASSWORD": PASSWORD}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 30
    while not [s for s in app.sessions("laptop") if s["state"] == "running"]:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(1)  # data flowing
    return proc


def last_session(app: Appliance, count: int) -> dict[str, Any]:
    rows = app.ended("laptop", count)
    return rows[0]


@pytest.mark.parametrize("daemon", [False, True], ids=["ssh", "rsyncd"])
def test_a_client_killed_mid_transfer_fails_its_session(app: Appliance, tmp_path: Path, daemon: bool) -> None:
    before = committed(app, tmp_path)
    proc = slow_client(app, tmp_path, daemon=daemon)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    session = last_session(app, 2)
    assert session["state"] == "failed" and session["snapshot"] is None
    assert "rsync exited with code" in session["reason"] or "stopped" in session["reason"], session
    time.sleep(1)
    assert snapshot_state(app, before["names"][0]) == before


def test_maintenance_mid_transfer_fails_the_session_and_refuses_new_ones(app: Appliance, tmp_path: Path) -> None:
    before = committed(app, tmp_path)
    proc = slow_client(app, tmp_path)
    cairn(app.data, "maintenance", "on", "--reason", "disk swap")
    try:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode != 0 and "Read-only file system" in err, err
        session = last_session(app, 2)
        assert session["state"] == "failed" and session["snapshot"] is None
        (tmp_path / "new").write_text("new")
        refused = app.rsync_ssh("laptop", str(tmp_path / "new"))
        assert refused.returncode != 0 and "no backup now" in refused.stderr and "disk swap" in refused.stderr
        env = {**os.environ, "RSYNC_PASSWORD": PASSWORD}
        daemon = subprocess.run(["rsync", "-a", str(tmp_path / "new"), app.daemon_url("laptop")], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert daemon.returncode != 0 and "disk swap" in daemon.stdout + daemon.stderr
        assert len(app.sessions("laptop")) == 2
    finally:
        cairn(app.data, "maintenance", "off")
    assert snapshot_state(app, before["names"][0]) == before


def test_an_appliance_restarted_during_a_session_records_it_failed(tmp_path: Path) -> None:
    app = prepare(tmp_path, ("laptop",))
    with serving(app, tmp_path / "serve.log"):
        before = committed(app, tmp_path)
        proc = slow_client(app, tmp_path)
    _out, err = proc.communicate(timeout=120)  # the appliance stopped: its doors and mount with it
    assert proc.returncode != 0 and "cairn: the appliance stopped during the session" in err, err
    with serving(app, tmp_path / "serve2.log"):
        (session, _first) = app.sessions("laptop")
        assert session["state"] == "failed" and "the appliance stopped during the session" in session["reason"]
        assert session["snapshot"] is None
        assert snapshot_state(app, before["names"][0]) == before
