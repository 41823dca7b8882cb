"""The SMB door with the real smbd and smbclient on loopback: accounts, access, sessions, Previous Versions."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from smbprotocol.connection import Connection, SecurityMode

from .servers import free_port
from .smbshare import IDLE, PASSWORDS, SmbAppliance, prepare, serving
from .test_backup_restore import CAIRN, cairn


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmbAppliance]:
    tmp = tmp_path_factory.mktemp("smb")
    with serving(prepare(tmp), tmp / "serve.log") as a:
        yield a


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0 and "NT_STATUS" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc.stdout


def _status(proc: subprocess.CompletedProcess[str]) -> str:
    """The NT status smbclient failed with."""
    out = proc.stdout + proc.stderr
    assert "NT_STATUS_" in out, out
    return "NT_STATUS_" + out.split("NT_STATUS_", 1)[1].split()[0]


def test_who_signs_in_and_what_they_may_do(app: SmbAppliance, tmp_path: Path) -> None:
    local = tmp_path / "f.txt"
    local.write_text("from a client\n")
    put = f"put {local} probe-%s.txt"
    # laptop: the group office (alice operator) and carol (admin) write; bob and dave do not see it.
    for user in ("alice", "carol"):
        _ok(app.smbclient("laptop", put % user, user))
    for user in ("bob", "dave"):
        assert _status(app.smbclient("laptop", "ls", user)) in ("NT_STATUS_ACCESS_DENIED", "NT_STATUS_BAD_NETWORK_NAME")
    # desk: bob owns it (see and restore: read-only), carol writes, alice and dave do not see it.
    _ok(app.smbclient("desk", put % "carol", "carol"))
    assert "probe-carol.txt" in _ok(app.smbclient("desk", "ls", "bob"))
    assert _status(app.smbclient("desk", put % "bob", "bob")) == "NT_STATUS_ACCESS_DENIED"
    for user in ("alice", "dave"):
        assert _status(app.smbclient("desk", "ls", user)) in ("NT_STATUS_ACCESS_DENIED", "NT_STATUS_BAD_NETWORK_NAME")
    assert (app.mnt / "laptop" / "current" / "probe-alice.txt").read_text() == "from a client\n"
    # The share list shows each account what it may see.
    listing = _ok(app.smbclient("IPC$", "", "bob", None, "-L", "127.0.0.1"))
    assert "desk" in listing and "laptop" not in listing


def test_wrong_passwords_guests_and_smb1_are_refused(app: SmbAppliance) -> None:
    assert _status(app.smbclient("laptop", "ls", "alice", "not-her-password")) == "NT_STATUS_LOGON_FAILURE"
    assert _status(app.smbclient("laptop", "ls", "nobody-here", "whatever-1")) == "NT_STATUS_LOGON_FAILURE"
    assert _status(app.smbclient("laptop", "ls", "root", "whatever-1")) == "NT_STATUS_LOGON_FAILURE"
    anonymous = subprocess.run(["smbclient", "//127.0.0.1/laptop", "-p", str(app.port), "-N", "-c", "ls"],
                               capture_output=True, text=True)  # fmt: skip
    assert anonymous.returncode != 0 and "NT_STATUS_" in anonymous.stdout + anonymous.stderr
    smb1 = app.smbclient("laptop", "ls", "alice", None, "-m", "NT1")
    assert smb1.returncode != 0
    # A client that would rather not sign is told that the server requires it.
    conn = Connection(uuid.uuid4(), "127.0.0.1", app.port, require_signing=False)
    conn.connect(timeout=10)
    try:
        assert conn.server_security_mode & SecurityMode.SMB2_NEGOTIATE_SIGNING_REQUIRED
        assert conn.require_signing
    finally:
        conn.disconnect()


def test_a_session_begins_with_the_first_write_and_ends_in_a_snapshot(app: SmbAppliance, tmp_path: Path) -> None:
    before = app.quiet("laptop")
    tree = tmp_path / "tree"
    (tree / "docs").mkdir(parents=True)
    (tree / "docs" / "a.txt").write_text("version 1\n")
    (tree / "big.bin").write_bytes(os.urandom(3 << 20))
    started = time.monotonic()
    _ok(app.smbclient("laptop", "prompt; recurse; mput *", cwd=tree))
    rows = app.settled("laptop", before + 1)
    session = rows[0]
    assert session["door"] == "smb" and session["principal"] == "alice" and session["client"] == "127.0.0.1"
    assert session["state"] == "done" and session["snapshot"], session
    assert session["bytes_received"] >= 3 << 20 and session["files_changed"] >= 3, session
    assert time.monotonic() - started >= IDLE  # it waited for the client to stay away
    snap = app.mnt / "laptop" / "snapshots" / session["snapshot"]
    assert (snap / "docs" / "a.txt").read_text() == "version 1\n"
    assert (snap / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()


def test_browsing_and_restoring_are_no_session(app: SmbAppliance, tmp_path: Path) -> None:
    _ok(app.smbclient("laptop", f"put {__file__} browse.py"))
    count = app.quiet("laptop")
    _ok(app.smbclient("laptop", f"ls; get browse.py {tmp_path / 'back.py'}"))
    assert app.smbclient("laptop", "allinfo browse.py").returncode == 0  # its Previous Versions listed
    time.sleep(IDLE + 2)
    assert len(app.sessions("laptop")) == count
    assert (tmp_path / "back.py").read_text() == Path(__file__).read_text()


def test_reconnecting_within_the_idle_time_is_one_session(app: SmbAppliance, tmp_path: Path) -> None:
    before = app.quiet("laptop")
    local = tmp_path / "part.txt"
    for i in range(3):
        local.write_text(f"part {i}\n")
        _ok(app.smbclient("laptop", f"put {local} part-{i}.txt"))  # the next connects well within IDLE
    rows = app.settled("laptop", before + 1)
    time.sleep(IDLE + 1)
    rows = app.sessions("laptop")
    assert len(rows) == before + 1, rows
    assert rows[0]["files_changed"] >= 3


def test_snapshots_are_previous_versions(app: SmbAppliance, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    app.quiet("laptop")
    for text in ("first\n", "second\n"):
        note.write_text(text)
        _ok(app.smbclient("laptop", f"put {note} note.txt"))
        app.quiet("laptop")
    tokens = app.versions("laptop", len(app.snapshots("laptop")))
    listed = app.smbclient("laptop", "allinfo note.txt").stdout  # NT_STATUS lines for versions without the file
    shown = [line.strip() for line in listed.splitlines() if line.strip().startswith("@GMT-")]
    assert len(shown) >= 2 and set(shown) <= set(tokens), (shown, tokens)
    newest, older = shown[0], shown[1]
    assert newest > older  # the newest first, as Explorer lists them
    got = tmp_path / "got.txt"
    _ok(app.smbclient("laptop", f"get {older}/note.txt {got}"))
    assert got.read_text() == "first\n"
    _ok(app.smbclient("laptop", f"get {newest}/note.txt {got}"))
    assert got.read_text() == "second\n"
    # Read-only: a write into a Previous Version is refused, and the snapshot is unchanged.
    refused = app.smbclient("laptop", f"put {note} {older}/note.txt")
    assert refused.returncode != 0 or "NT_STATUS_" in refused.stdout + refused.stderr
    _ok(app.smbclient("laptop", f"get {older}/note.txt {got}"))
    assert got.read_text() == "first\n"
    # A snapshot's time is its token (UTC).
    snap = next(s for s in app.snapshots("laptop") if s["name"] == app.sessions("laptop")[0]["snapshot"])
    assert newest == time.strftime("@GMT-%Y.%m.%d-%H.%M.%S", time.gmtime(int(snap["created"])))


def test_a_deleted_snapshot_leaves_the_previous_versions(app: SmbAppliance, tmp_path: Path) -> None:
    _ok(app.smbclient("desk", f"put {__file__} kept.py", "carol"))
    app.quiet("desk")
    names = [s["name"] for s in app.snapshots("desk")]
    tokens = app.versions("desk", len(names))
    for name in names:
        cairn(app.data, "snapshot", "delete", "desk", name)
    deadline = time.monotonic() + 30
    folder = app.data / "doors" / "smb" / "versions" / "desk"
    while folder.exists() and any(folder.iterdir()):
        assert time.monotonic() < deadline, tokens
        time.sleep(0.2)


def test_accounts_follow_the_catalog(app: SmbAppliance) -> None:
    def passwd(user: str, password: str) -> None:
        subprocess.run([*CAIRN, "--data", str(app.data), "user", "passwd", user, "--password-file", "/dev/stdin"],
                       input=password, text=True, check=True, capture_output=True)  # fmt: skip

    def eventually(user: str, password: str, ok: bool) -> None:
        deadline = time.monotonic() + 30
        while (app.smbclient("laptop", "ls", user, password).returncode == 0) != ok:
            assert time.monotonic() < deadline, f"{user}: still {not ok}"
            time.sleep(0.5)

    cairn(app.data, "group", "member", "office", "dave", "operator")
    eventually("dave", PASSWORDS["dave"], True)  # a new role reaches the share
    passwd("dave", "a-new-password-5")
    eventually("dave", "a-new-password-5", True)
    assert _status(app.smbclient("laptop", "ls", "dave", PASSWORDS["dave"])) == "NT_STATUS_LOGON_FAILURE"
    cairn(app.data, "user", "remove", "dave")
    eventually("dave", "a-new-password-5", False)
    assert "dave" not in (app.data / "doors" / "smb" / "users.map").read_text()
    modes = {p.name: p.stat().st_mode & 0o777 for p in (app.data / "doors" / "smb").rglob("*") if p.is_file()}
    assert modes["smbpasswd"] == 0o600 and modes["smb.conf"] == 0o600, modes


def test_a_taken_port_stops_the_start_with_a_hint(tmp_path: Path) -> None:
    app = SmbAppliance(tmp_path / "data", tmp_path / "mnt", 0)
    cairn(app.data, "init")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        serve = [
            "serve",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--no-tls",
            "--mount",
            str(app.mnt),
            "--smb",
            f"127.0.0.1:{port}",
        ]
        proc = subprocess.run([*CAIRN, "--data", str(app.data), *serve], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert f"cannot start smbd: port {port} is in use (the machine's own Samba?" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.ismount(app.mnt)
