"""The robocopy stand-in against a plain Samba on loopback: what it sends lands as Windows would leave it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from Cryptodome.Hash import MD4
from smbprotocol.exceptions import SharingViolation

from . import robocopy
from .robocopy import MirrorStats, Share, WinInfo
from .servers import free_port
from .smbwin import ARCHIVE, HIDDEN, READONLY, SYSTEM, filetime_from_ns

USER, PASSWORD = "robo", "Pa55-word"
NSS_WRAPPER = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"
CREATED = 133_000_000_000_000_000  # 2022-06-17, a creation time no local clock would produce


@dataclass
class Samba:
    port: int
    data: Path  # the share's directory
    snaps: Path  # shadow_copy2's snapdir: @GMT-… symlinks to snapshot copies of `data`
    pid: int

    def connect(self) -> Share:
        return Share("127.0.0.1", self.port, "data", USER, PASSWORD)

    def children(self) -> set[int]:
        """The smbd processes under the main one: two helpers plus one per connection."""
        text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        return {int(pid) for pid in text.split()}


def _write_config(root: Path, port: int) -> Path:
    smb = root / "smb"
    for name in ("private", "state", "cache", "lock", "pid", "ncalrpc"):
        (smb / name).mkdir(parents=True)
    users = ["root:x:0:0:root:/root:/bin/sh", "nobody:x:65534:65534::/nonexistent:/bin/false"]  # nobody: the guest
    (smb / "passwd").write_text("\n".join([*users, f"{USER}:x:1001:65534::/nonexistent:/bin/false", ""]))
    (smb / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    nt_hash = MD4.new(PASSWORD.encode("utf-16-le")).hexdigest().upper()
    # LCT-: the time the password was set; without it the login fails with PASSWORD_MUST_CHANGE.
    entry = f"{USER}:1001:{'X' * 32}:{nt_hash}:[U          ]:LCT-{int(time.time()):08X}:\n"
    (smb / "private" / "smbpasswd").write_text(entry)
    dirs = "\n".join(f"{name} = {smb / key}" for name, key in _DIRS.items())
    config = smb / "smb.conf"
    config.write_text(f"""[global]
server role = standalone server
passdb backend = smbpasswd:{smb}/private/smbpasswd
map to guest = never
server min protocol = SMB2_02
server signing = mandatory
disable netbios = yes
smb ports = {port}
interfaces = 127.0.0.1
bind interfaces only = yes
{dirs}
log file = {smb}/log
load printers = no
printing = bsd
printcap name = /dev/null
disable spoolss = yes
kernel oplocks = no
[data]
path = {root}/data
valid users = {USER}
read only = no
force user = root
vfs objects = shadow_copy2
shadow:mountpoint = {root}/data
shadow:snapdir = {root}/snaps
shadow:format = @GMT-%Y.%m.%d-%H.%M.%S
""")
    return config


_DIRS = {
    "private dir": "private",
    "state directory": "state",
    "cache directory": "cache",
    "lock directory": "lock",
    "pid directory": "pid",
    "ncalrpc dir": "ncalrpc",
}


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Samba]:
    root = tmp_path_factory.mktemp("samba")
    (root / "data").mkdir()
    (root / "snaps").mkdir()
    port = free_port()
    config = _write_config(root, port)
    smb = root / "smb"
    env = dict(os.environ, LD_PRELOAD=NSS_WRAPPER, NSS_WRAPPER_PASSWD=f"{smb}/passwd", NSS_WRAPPER_GROUP=f"{smb}/group")
    command = ["smbd", "--foreground", "--no-process-group", f"--configfile={config}", "--debug-stdout"]
    with open(root / "smbd.out", "wb") as out:
        # A group of its own: stopping, smbd signals its whole process group, which would be pytest's.
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, process_group=0
        )
    try:
        _wait_port(port, process)
        yield Samba(port, root / "data", root / "snaps", process.pid)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        assert process.poll() is None, "smbd exited at start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("smbd did not listen")


@pytest.fixture
def share(samba: Samba) -> Iterator[Share]:
    with samba.connect() as share:
        yield share


def _tree(root: Path) -> dict[str, bytes]:
    """A small tree as a user's documents look: unicode names, nesting, a 3 MiB file, an empty folder."""
    files = {
        "Dokumente/Übersicht 2024.txt": "Grüße aus Köln\n".encode(),
        "Dokumente/日本語/メモ.txt": "メモ\n".encode(),
        "a/b/c/deep.txt": b"deep\n",
        "big.bin": os.urandom(3 << 20),
        "readonly.txt": b"do not touch\n",
        "hidden.sys": b"\x00system\x00",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "empty").mkdir()
    return files


ATTRIBUTES = {"readonly.txt": READONLY | ARCHIVE, "hidden.sys": HIDDEN | SYSTEM}


def test_mirror_lands_bytes_times_and_attributes(samba: Samba, share: Share, tmp_path: Path) -> None:
    files = _tree(tmp_path)
    created = {"big.bin": CREATED, "Dokumente": CREATED + 1}
    stats = robocopy.mirror(share, tmp_path, "m1", ATTRIBUTES, created)
    assert (stats.files_copied, stats.bytes_copied) == (6, sum(map(len, files.values())))
    assert stats.dirs_created == 7  # m1, Dokumente, 日本語, a, b, c, empty
    for rel, data in files.items():
        assert (samba.data / "m1" / rel).read_bytes() == data
        got = robocopy.info(share, f"m1/{rel}")
        assert got.attributes == ATTRIBUTES.get(rel, ARCHIVE)
        assert got.last_write_time == filetime_from_ns((tmp_path / rel).stat().st_mtime_ns)
        assert got.creation_time == created.get(rel, got.last_write_time)
        assert got.size == len(data)
        assert os.getxattr(samba.data / "m1" / rel, "user.DOSATTRIB")  # Samba keeps DOS attributes there
    assert (samba.data / "m1/empty").is_dir()
    folder = robocopy.info(share, "m1/Dokumente")
    assert (folder.is_dir, folder.creation_time) == (True, CREATED + 1)
    assert folder.last_write_time == filetime_from_ns((tmp_path / "Dokumente").stat().st_mtime_ns)  # /DCOPY:T

    again = robocopy.mirror(share, tmp_path, "m1", ATTRIBUTES, created)
    assert again == MirrorStats(files_skipped=6)


def test_set_info_changes_what_samba_stores(samba: Samba, share: Share, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"x")
    robocopy.mirror(share, tmp_path, "m2")
    before = os.getxattr(samba.data / "m2/f.txt", "user.DOSATTRIB")
    robocopy.set_info(share, "m2/f.txt", attributes=HIDDEN | ARCHIVE, creation_time=CREATED, last_write_time=CREATED)
    got = robocopy.info(share, "m2/f.txt")
    assert (got.attributes, got.creation_time, got.last_write_time) == (HIDDEN | ARCHIVE, CREATED, CREATED)
    assert os.getxattr(samba.data / "m2/f.txt", "user.DOSATTRIB") != before
    assert (samba.data / "m2/f.txt").stat().st_mtime_ns == (CREATED - filetime_from_ns(0)) * 100


def test_changes_and_extras_follow_the_source(samba: Samba, share: Share, tmp_path: Path) -> None:
    _tree(tmp_path)
    robocopy.mirror(share, tmp_path, "m3", ATTRIBUTES)
    (tmp_path / "hidden.sys").write_bytes(b"changed, hidden and system on the share")
    os.utime(tmp_path / "readonly.txt", ns=(0, 1_000_000_000))  # same size, other time: copied again
    (tmp_path / "a/b/c/deep.txt").unlink()
    shutil.rmtree(tmp_path / "Dokumente")
    attributes = {"hidden.sys": HIDDEN | SYSTEM}  # readonly.txt loses its read-only bit
    stats = robocopy.mirror(share, tmp_path, "m3", attributes)
    assert sorted(stats.copied) == ["hidden.sys", "readonly.txt"]
    assert (stats.extras_deleted, stats.files_skipped) == (2, 1)  # deep.txt and Dokumente/; big.bin
    assert (samba.data / "m3/hidden.sys").read_bytes() == b"changed, hidden and system on the share"
    assert robocopy.info(share, "m3/readonly.txt").attributes == ARCHIVE
    assert not (samba.data / "m3/Dokumente").exists()
    assert not (samba.data / "m3/a/b/c/deep.txt").exists()

    (tmp_path / "readonly.txt").unlink()
    robocopy.set_info(share, "m3/readonly.txt", attributes=READONLY)
    assert robocopy.mirror(share, tmp_path, "m3", attributes).extras_deleted == 1
    assert not (samba.data / "m3/readonly.txt").exists()


def test_previous_versions_restore_old_bytes(samba: Samba, share: Share, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "report.txt").write_bytes(b"version 1\n")
    robocopy.mirror(share, source, "m4", {"report.txt": HIDDEN | ARCHIVE})
    older = samba.snaps.parent / "snapshot-1"
    shutil.copytree(samba.data, older, symlinks=True, copy_function=_copy_with_xattrs)
    tokens = ["@GMT-2024.03.01-10.00.00", "@GMT-2024.03.02-11.30.15"]
    for token in tokens:
        (samba.snaps / token).symlink_to(older)
    (source / "report.txt").write_bytes(b"version 2, longer\n")
    robocopy.mirror(share, source, "m4")

    assert sorted(robocopy.previous_versions(share, "m4")) == tokens
    old = robocopy.restore(share, "m4", tmp_path / "old", snapshot=tokens[0])
    assert (tmp_path / "old/report.txt").read_bytes() == b"version 1\n"
    assert old["report.txt"].attributes == HIDDEN | ARCHIVE
    assert _stamp(old["report.txt"]) == _stamp(robocopy.info(share, "m4/report.txt", snapshot=tokens[0]))
    new = robocopy.restore(share, "m4", tmp_path / "new")
    assert (tmp_path / "new/report.txt").read_bytes() == b"version 2, longer\n"
    assert _stamp(new["report.txt"]) == _stamp(robocopy.info(share, "m4/report.txt"))
    assert (tmp_path / "new/report.txt").stat().st_mtime_ns == (source / "report.txt").stat().st_mtime_ns // 100 * 100


def _stamp(info: WinInfo) -> tuple[int, int, int, int]:
    """What a restore must bring back; the last-access time moves as the restore reads."""
    return info.attributes, info.creation_time, info.last_write_time, info.size


def _copy_with_xattrs(src: str, dst: str) -> None:
    shutil.copy2(src, dst)  # copy2 copies user.* xattrs too (DOSATTRIB), as a snapshot keeps them


def test_a_file_locked_open_cannot_be_opened_or_replaced(samba: Samba, share: Share, tmp_path: Path) -> None:
    (tmp_path / "mailbox.pst").write_bytes(b"a" * 100)
    robocopy.mirror(share, tmp_path, "m5")
    (tmp_path / "mailbox.pst").write_bytes(b"b" * 200)
    with samba.connect() as other, robocopy.open_locked(other, "m5/mailbox.pst"):
        assert robocopy.info(share, "m5/mailbox.pst").size == 100  # reading attributes shares with anyone
        with pytest.raises(SharingViolation), robocopy.open_locked(share, "m5/mailbox.pst"):
            pass
        with pytest.raises(SharingViolation):
            robocopy.mirror(share, tmp_path, "m5", wait=0.1)
    assert robocopy.mirror(share, tmp_path, "m5").files_copied == 1
    assert (samba.data / "m5/mailbox.pst").read_bytes() == b"b" * 200


def test_close_ends_the_servers_connection_process(samba: Samba) -> None:
    before = samba.children()
    share = samba.connect()
    assert len(samba.children() - before) == 1
    share.close()
    for _ in range(100):
        if samba.children() <= before:
            break
        time.sleep(0.05)
    assert samba.children() <= before
