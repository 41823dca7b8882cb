"""What a Windows client sends through Cairn's SMB share comes back: robocopy's data, attributes and times,
odd names, locked files; from current/, from Previous Versions and from snapshots through the mount."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from smbprotocol.exceptions import SharingViolation, SMBException, SMBResponseException
from smbprotocol.header import NtStatus
from smbprotocol.open import CreateDisposition, FilePipePrinterAccessMask

from . import robocopy
from .robocopy import Share
from .smbshare import PASSWORDS, SmbAppliance, prepare, serving
from .smbwin import ARCHIVE, HIDDEN, READONLY, SYSTEM, filetime_from_ns
from .test_backup_restore import cairn


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmbAppliance]:
    tmp = tmp_path_factory.mktemp("smbwin")
    with serving(prepare(tmp), tmp / "serve.log") as a:
        yield a


def _share(app: SmbAppliance, share: str = "laptop", user: str = "alice") -> Share:
    return Share("127.0.0.1", app.port, share, user, PASSWORDS[user])


def _filetime(year: int, month: int, day: int) -> int:
    return filetime_from_ns(int(datetime(year, month, day, 8, 30, tzinfo=UTC).timestamp()) * 10**9)


UNICODE = ["Ünïcödé Straße.txt", "日本語のファイル.txt", "emoji 🎉.txt", "Ελληνικά"]


def _tree(root: Path) -> dict[str, int]:
    """A user folder as Windows has it; returns the attributes robocopy sends for each file."""
    (root / "Documents" / "Projects").mkdir(parents=True)
    (root / "Documents" / "report.docx").write_bytes(os.urandom(200_000))
    (root / "Documents" / "Projects" / "plan.txt").write_text("plan\n")
    (root / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (root / "ntuser.dat").write_bytes(os.urandom(5000))
    (root / "readonly.txt").write_text("do not touch\n")
    (root / "empty").mkdir()
    for name in UNICODE[:3]:
        (root / name).write_text(name)
    (root / UNICODE[3]).mkdir()
    (root / UNICODE[3] / "αρχείο.txt").write_text("greek\n")
    long_name = "L" * 200 + ".txt"  # longer than MAX_PATH's parts, well within 255
    (root / long_name).write_text("long\n")
    return {
        "desktop.ini": HIDDEN | SYSTEM | ARCHIVE,
        "ntuser.dat": HIDDEN | ARCHIVE,
        "readonly.txt": READONLY | ARCHIVE,
    }


def test_robocopy_mir_keeps_attributes_and_times_in_snapshots(app: SmbAppliance, tmp_path: Path) -> None:
    local = tmp_path / "Users"
    attributes = _tree(local)
    created = {"Documents/report.docx": _filetime(2019, 3, 4), "readonly.txt": _filetime(2020, 5, 6),
               "Documents": _filetime(2018, 1, 2)}  # fmt: skip
    before = app.quiet("laptop")
    with _share(app) as share:
        stats = robocopy.mirror(share, local, "Users", attributes=attributes, creation_times=created)
    assert stats.files_copied == 10 and stats.failures_retried == 0, stats
    session = app.settled("laptop", before + 1)[0]
    assert session["state"] == "done" and session["snapshot"], session
    sent = {rel: info for rel, info in _remote(app, "Users").items()}
    # What was sent is what current/ says, what the Previous Version says, and what the mount's snapshot keeps.
    token = app.versions("laptop", 1)[-1]
    with _share(app) as share:
        back = robocopy.restore(share, "Users", tmp_path / "from-version", snapshot=token)
    for rel, want in attributes.items():
        assert sent[rel].attributes & 0xFF == want & 0xFF, (rel, sent[rel])
        assert back[rel].attributes & 0xFF == want & 0xFF, (rel, back[rel])
    for rel, when in created.items():
        assert sent[rel].creation_time == when and back[rel].creation_time == when, rel
    for rel, info in sent.items():
        assert back[rel].last_write_time == info.last_write_time, rel
        if not info.is_dir:
            assert (tmp_path / "from-version" / rel).read_bytes() == (local / rel).read_bytes(), rel
            mtime = filetime_from_ns((local / rel).stat().st_mtime_ns)
            assert abs(info.last_write_time - mtime) < 10, rel  # FILETIME ticks: 100 ns
    snapshot = app.mnt / "laptop" / "snapshots" / session["snapshot"] / "Users"
    assert os.getxattr(snapshot / "desktop.ini", "user.DOSATTRIB")  # Samba's attributes, kept by the snapshot
    assert (snapshot / UNICODE[1]).read_text() == UNICODE[1]
    # The unchanged re-run copies nothing.
    with _share(app) as share:
        again = robocopy.mirror(share, local, "Users", attributes=attributes, creation_times=created)
    assert again.files_copied == 0 and again.files_skipped == 10, again
    # It changed no file but stamped the folders' times (/DCOPY:T): a backup ran, and is a session as an
    # unchanged rsync run is (the source stays fresh), with nothing changed in it.
    rows = app.settled("laptop", before + 2)
    assert len(rows) == before + 2 and rows[0]["state"] == "done" and rows[0]["files_changed"] == 0, rows[0]


def _remote(app: SmbAppliance, remote: str) -> dict[str, robocopy.WinInfo]:
    with _share(app) as share:
        return robocopy.restore(share, remote, app.mnt.parent / "probe-restore")


def test_mir_deletes_extras_and_read_only_files(app: SmbAppliance, tmp_path: Path) -> None:
    local = tmp_path / "d"
    (local / "sub").mkdir(parents=True)
    (local / "keep.txt").write_text("keep\n")
    (local / "gone.txt").write_text("gone\n")
    (local / "sub" / "gone-too.txt").write_text("x\n")
    with _share(app) as share:
        robocopy.mirror(share, local, "Mirror", attributes={"gone.txt": READONLY | ARCHIVE})
        (local / "gone.txt").unlink()
        (local / "sub" / "gone-too.txt").unlink()
        (local / "sub").rmdir()
        stats = robocopy.mirror(share, local, "Mirror")
    assert stats.extras_deleted >= 2, stats
    assert sorted(os.listdir(app.mnt / "laptop" / "current" / "Mirror")) == ["keep.txt"]


def test_names_that_one_side_cannot_spell(app: SmbAppliance, tmp_path: Path) -> None:
    current = app.mnt / "laptop" / "current" / "Names"
    current.mkdir()
    # Backed up from Linux (rsync, the mount): names differing only in case, and names Windows forbids.
    linux_only = {"a:b.txt": "colon", "what?.txt": "question", "trailing.": "dot", "CON": "device", "back\\slash": "bs"}
    for name, text in {**linux_only, "Case.txt": "upper", "case.txt": "lower"}.items():
        (current / name).write_text(text)
    listing = app.smbclient("laptop", "cd Names; ls")
    assert listing.returncode == 0, listing.stderr
    assert "Case.txt" in listing.stdout and "case.txt" in listing.stdout
    for name in ("Case.txt", "case.txt"):
        got = tmp_path / f"got-{name}"
        assert app.smbclient("laptop", f'cd Names; get "{name}" {got}').returncode == 0
        assert got.read_text() == ("upper" if name[0] == "C" else "lower")
    # Windows-illegal names are shown under mangled 8.3 names (Samba's), and read through them.
    shown = {line.split()[0] for line in listing.stdout.splitlines()[2:] if line.strip() and "blocks" not in line}
    mangled = sorted(n for n in shown if "~" in n)
    assert len(mangled) >= 4, listing.stdout
    texts = set()
    for name in mangled:
        got = tmp_path / "mangled"
        assert app.smbclient("laptop", f'cd Names; get "{name}" {got}').returncode == 0
        texts.add(got.read_text())
    assert texts <= set(linux_only.values()) and len(texts) >= 4
    # From Windows: a name of 255 UTF-16 characters is legal there, and 765 bytes here (over 255: refused).
    wide = "日" * 80 + ".txt"  # 244 bytes in UTF-8: stored as it is
    wider = "日" * 200 + ".txt"  # 604 bytes: no Linux file system takes it, and Samba says so
    staging = tmp_path / "wide"
    staging.mkdir()
    (staging / wide).write_text("wide")
    with _share(app) as share:
        robocopy.mirror(share, staging, "Wide")
        with pytest.raises(SMBResponseException) as refused:
            share.open(f"Wide/{wider}", FilePipePrinterAccessMask.GENERIC_WRITE, CreateDisposition.FILE_CREATE)
    assert refused.value.status == NtStatus.STATUS_OBJECT_NAME_INVALID, refused.value
    assert sorted(os.listdir(app.mnt / "laptop" / "current" / "Wide")) == [wide]


def test_a_file_locked_open_is_a_sharing_violation_until_closed(app: SmbAppliance, tmp_path: Path) -> None:
    local = tmp_path / "l"
    local.mkdir()
    (local / "locked.db").write_bytes(b"v1" * 1000)
    with _share(app) as first, _share(app) as second:
        robocopy.mirror(first, local, "Locked")
        (local / "locked.db").write_bytes(b"v2" * 1000)
        with robocopy.open_locked(first, "Locked/locked.db"), pytest.raises(SharingViolation):
            robocopy.mirror(second, local, "Locked", wait=0.1)
        stats = robocopy.mirror(second, local, "Locked")
    assert stats.files_copied == 1
    assert (app.mnt / "laptop" / "current" / "Locked" / "locked.db").read_bytes() == b"v2" * 1000


def test_a_connection_that_dies_without_a_disconnect_fails_its_session(app: SmbAppliance, tmp_path: Path) -> None:
    before = app.quiet("desk")
    local = tmp_path / "k"
    local.mkdir()
    (local / "half.bin").write_bytes(os.urandom(1 << 20))
    share = _share(app, "desk", "carol")
    robocopy.mirror(share, local, "Killed")
    pids = _connection_pids(app)
    assert pids
    for pid in pids:
        os.kill(pid, 9)  # the server's process for the connection, as a crash would end it
    rows = app.settled("desk", before + 1)
    assert rows[0]["state"] == "failed" and "connection" in rows[0]["reason"], rows[0]
    with contextlib.suppress(Exception):  # its server went away
        share.close()


def _connection_pids(app: SmbAppliance) -> list[int]:
    folder = app.data / "doors" / "smb"
    env = {"LD_PRELOAD": subprocess.run(["sh", "-c", "ls /usr/lib/*/libnss_wrapper.so"], capture_output=True,
                                        text=True).stdout.split()[0],
           "NSS_WRAPPER_PASSWD": str(folder / "passwd"), "NSS_WRAPPER_GROUP": str(folder / "group"),
           "PATH": os.environ["PATH"]}  # fmt: skip
    out = subprocess.run(["smbstatus", f"--configfile={folder / 'smb.conf'}", "-p", "--json"], capture_output=True,
                         text=True, env=env, check=True).stdout  # fmt: skip
    return [int(s["server_id"]["pid"]) for s in json.loads(out).get("sessions", {}).values()]


def test_a_removed_account_is_signed_out_of_its_open_connection(app: SmbAppliance, tmp_path: Path) -> None:
    cairn(app.data, "group", "member", "office", "dave", "operator")
    before = app.quiet("laptop")
    local = tmp_path / "r"
    local.mkdir()
    (local / "one.txt").write_text("one\n")
    deadline = time.monotonic() + 30
    while True:  # the new role reaches the share within a refresh
        try:
            share = _share(app, "laptop", "dave")
            break
        except SMBException:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    robocopy.mirror(share, local, "Revoked")
    cairn(app.data, "user", "remove", "dave")
    deadline = time.monotonic() + 30
    with pytest.raises(SMBException):  # the connection is ended: the next request fails
        while time.monotonic() < deadline:
            robocopy.info(share, "Revoked/one.txt")
            time.sleep(0.5)
    with contextlib.suppress(Exception):
        share.close()
    row = app.settled("laptop", before + 1)[0]
    assert row["principal"] == "dave" and row["state"] == "failed" and "lost its access" in row["reason"], row
