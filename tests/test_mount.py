"""The FUSE mount, mounted for real and driven with stock rsync, cp, find and stat."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_backup_restore import cairn
from .trees import make_tree, rsync_differences

CAIRN = [sys.executable, "-c", "from appliance.cli import main; main()"]


class Mounted:
    def __init__(self, data: Path, mountpoint: Path, log: Path):
        self.data, self.path, self.log = data, mountpoint, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*CAIRN, "--data", str(self.data), "mount", str(self.path)], stdout=out, stderr=out
            )
        deadline = time.monotonic() + 30
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the mount did not come up:\n{self.log.read_text()}")
            time.sleep(0.05)

    def answers(self) -> bool:
        """Mounted, and served: a stale mount of a killed process is mounted but answers ENOTCONN."""
        if not os.path.ismount(self.path) or "mounted at" not in self.log.read_text():
            return False
        try:
            os.listdir(self.path)
        except OSError:
            return False
        return True

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        if sig == signal.SIGTERM:
            assert self.proc.returncode == 0, self.log.read_text()
            assert not os.path.ismount(self.path)

    def assert_clean_log(self) -> None:
        text = self.log.read_text()
        assert "Traceback" not in text and "ERROR" not in text, text


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Mounted]:
    # A space in the mountpoint: /proc/mounts escapes it, and the stale-mount check must still match.
    m = Mounted(tmp_path / "data", tmp_path / "the mnt", tmp_path / "mount.log")
    m.path.mkdir()
    m.start()
    try:
        yield m
    finally:
        if m.proc is not None and m.proc.poll() is None:
            m.stop()
        subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)
    m.assert_clean_log()


def rsync(src: Path, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rsync", "-aHAXS", "--numeric-ids", "--delete", *extra, f"{src}/", f"{dest}/"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip


def test_rsync_into_the_mount_and_snapshot(tmp_path: Path, mounted: Mounted) -> None:
    src = tmp_path / "src"
    make_tree(src)
    m = mounted.path
    os.mkdir(m / "h1")
    assert sorted(os.listdir(m / "h1")) == ["current", "images", "snapshots"]
    rsync(src, m / "h1" / "current")
    os.mkdir(m / "h1" / "snapshots" / "one")
    assert os.readlink(m / "h1" / "snapshots" / "latest") == "one"
    assert rsync_differences(src, m / "h1" / "snapshots" / "one") == []
    assert rsync_differences(src, m / "h1" / "current") == []

    # A second rsync of a changed tree sends only what changed.
    (src / "size-100").write_bytes(b"changed content")
    out = rsync(src, m / "h1" / "current", "--itemize-changes")
    sent = [line for line in out.stdout.splitlines() if line.startswith(">f")]
    assert [line.split(" ", 1)[1] for line in sent] == ["size-100"]
    os.mkdir(m / "h1" / "snapshots" / "two")
    assert rsync_differences(src, m / "h1" / "snapshots" / "two") == []
    assert (m / "h1" / "snapshots" / "one" / "size-100").stat().st_size == 100

    # Snapshots are read-only; rmdir deletes one; a source with snapshots stays.
    with pytest.raises(OSError) as e:
        (m / "h1" / "snapshots" / "one" / "new").write_bytes(b"x")
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        os.rmdir(m / "h1")
    assert e.value.errno == errno.ENOTEMPTY
    os.rmdir(m / "h1" / "snapshots" / "one")
    assert sorted(os.listdir(m / "h1" / "snapshots")) == ["latest", "two"]

    found = subprocess.run(["find", str(m / "h1" / "snapshots" / "two")], capture_output=True, check=True)
    assert len(found.stdout.splitlines()) > 40
    mounted.stop()
    listed = cairn(mounted.data, "snapshot", "list", "h1", "--json").stdout
    assert '"two"' in listed and '"one"' not in listed
    cairn(mounted.data, "restore", "h1", "two", str(tmp_path / "out"))
    assert rsync_differences(src, tmp_path / "out") == []


def test_a_snapshot_deleted_elsewhere_and_taken_again_shows_its_new_content(mounted: Mounted) -> None:
    """The kernel caches what is below a snapshot for minutes; its name in snapshots/ only for a second."""
    m = mounted.path
    os.mkdir(m / "h1")
    (m / "h1" / "current" / "f").write_bytes(b"first")
    os.mkdir(m / "h1" / "snapshots" / "x")
    assert (m / "h1" / "snapshots" / "x" / "f").read_bytes() == b"first"  # now in the kernel's caches
    assert "x" in os.listdir(m / "h1" / "snapshots")  # a listing caches the names too
    cairn(mounted.data, "snapshot", "delete", "h1", "x")  # by another process: the mount hears nothing of it
    (m / "h1" / "current" / "f").write_bytes(b"second")
    time.sleep(2)  # the name, and the mount's list of snapshots, are kept a second
    os.mkdir(m / "h1" / "snapshots" / "x")
    assert (m / "h1" / "snapshots" / "x" / "f").read_bytes() == b"second"


def test_stale_mount_after_kill_is_cleared(tmp_path: Path, mounted: Mounted) -> None:
    os.mkdir(mounted.path / "h1")
    (mounted.path / "h1" / "current" / "f").write_bytes(b"kept")
    os.mkdir(mounted.path / "h1" / "snapshots" / "s")
    mounted.stop(signal.SIGKILL)
    with pytest.raises(OSError) as e:
        os.listdir(mounted.path)  # a stat could still come from the kernel's attribute cache
    assert e.value.errno == errno.ENOTCONN
    mounted.start()
    assert (mounted.path / "h1" / "snapshots" / "s" / "f").read_bytes() == b"kept"


def test_stock_tools_in_current(tmp_path: Path, mounted: Mounted) -> None:
    m = mounted.path
    os.mkdir(m / "h1")
    cur = m / "h1" / "current"
    src = tmp_path / "src"
    make_tree(src)
    subprocess.run(["cp", "-a", f"{src}/.", str(cur / "cp")], check=True)
    assert rsync_differences(src, cur / "cp") == []
    tar = ["tar", "--acls", "--xattrs", "--xattrs-include=*"]
    subprocess.run([*tar, "-C", str(src), "-cf", str(tmp_path / "t.tar"), "."], check=True, capture_output=True)
    (cur / "tar").mkdir()
    subprocess.run([*tar, "-C", str(cur / "tar"), "-xpf", str(tmp_path / "t.tar")], check=True)
    # tar cannot archive a socket; everything else comes back
    assert [line for line in rsync_differences(src, cur / "tar") if not line.endswith(" socket")] == []

    repo = tmp_path / "repo"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    for i in range(20):
        (repo / f"f{i}.txt").write_text(f"line {i}\n" * (i + 1))
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "one"], check=True)
    subprocess.run([*git, "clone", "-q", str(repo), str(cur / "clone")], check=True)
    fsck = subprocess.run([*git, "-C", str(cur / "clone"), "fsck", "--strict"], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr
    assert (cur / "clone" / "f7.txt").read_text() == "line 7\n" * 8

    import sqlite3

    db = sqlite3.connect(cur / "db.sqlite")
    db.execute("create table t (k integer primary key, v text)")
    for batch in range(20):
        db.executemany("insert into t (v) values (?)", [(f"{batch}-{i}" * 20,) for i in range(200)])
        db.commit()
    db.execute("update t set v = 'changed' where k % 7 = 0")
    db.commit()
    db.close()
    db = sqlite3.connect(cur / "db.sqlite")
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert db.execute("select count(*) from t where v = 'changed'").fetchone()[0] == 4000 // 7
    db.close()

    big = cur / "inplace"
    data = bytearray(os.urandom(6 << 20))
    (tmp_path / "inplace").write_bytes(data)
    subprocess.run(["rsync", "-a", str(tmp_path / "inplace"), str(big)], check=True)
    data[3 << 20 : (3 << 20) + 10] = b"0123456789"
    (tmp_path / "inplace").write_bytes(data)
    os.utime(tmp_path / "inplace", (1e9, 2e9))  # rsync's quick check compares whole seconds
    subprocess.run(["rsync", "-a", "--inplace", "--no-whole-file", str(tmp_path / "inplace"), str(big)], check=True)
    assert big.read_bytes() == data

    subprocess.run(["truncate", "-s", "10M", str(cur / "sparse")], check=True)
    assert (cur / "sparse").stat().st_size == 10 << 20
    assert (cur / "sparse").stat().st_blocks == 0
    subprocess.run(["truncate", "-s", "1000", str(big)], check=True)
    assert big.read_bytes() == data[:1000]
    # fallocate(1): the plain mode sizes the file, --keep-size changes nothing, punching a hole is refused
    # as file systems without it refuse it; posix_fallocate (--posix) goes the same way.
    subprocess.run(["fallocate", "-l", "1M", str(cur / "plain")], check=True)
    assert (cur / "plain").read_bytes() == bytes(1 << 20)
    subprocess.run(["fallocate", "--posix", "-l", "3M", str(cur / "prealloc")], check=True)
    assert (cur / "prealloc").read_bytes() == bytes(3 << 20)
    subprocess.run(["fallocate", "-o", "1M", "-l", "2M", str(cur / "plain")], check=True)  # grows it
    subprocess.run(["fallocate", "--keep-size", "-l", "8M", str(cur / "plain")], check=True)
    assert (cur / "plain").stat().st_size == 3 << 20
    subprocess.run(["fallocate", "-l", "64K", str(big)], check=True)  # inside the file: content kept
    assert big.read_bytes() == data[:1000] + bytes((64 << 10) - 1000)
    punch = subprocess.run(["fallocate", "--punch-hole", "-l", "4K", str(big)], capture_output=True, text=True)
    assert punch.returncode != 0 and "unsupported" in punch.stderr  # EOPNOTSUPP, in util-linux words

    import mmap

    with open(cur / "cp" / "size-65537", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[:] == (src / "size-65537").read_bytes()

    os.mkdir(m / "h1" / "snapshots" / "s")
    df = subprocess.run(["df", "-k", str(m)], capture_output=True, text=True, check=True).stdout.splitlines()[1]
    assert int(df.split()[1]) > 0
    with open(m / "h1" / "snapshots" / "s" / "db.sqlite", "rb") as f:
        snap = sqlite3.connect(f"file:{f.name}?mode=ro&immutable=1", uri=True)
        assert snap.execute("select count(*) from t").fetchone()[0] == 4000
        snap.close()


def test_errors_come_back_as_a_file_system_gives_them(tmp_path: Path, mounted: Mounted) -> None:
    m = mounted.path
    os.mkdir(m / "h1")
    os.mkdir(m / "h2")
    cur = m / "h1" / "current"
    (cur / "f").write_bytes(b"x")
    os.mkdir(cur / "d")
    (cur / "d" / "g").write_bytes(b"y")

    def fails(code: int, fn, *args) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(OSError) as e:
            fn(*args)
        assert e.value.errno == code, (fn, args, e.value)

    long = cur / ("x" * 256)
    for call, args in [(open, (long, "w")), (open, (long,)), (os.stat, (long,)), (os.mkdir, (long,)),
                       (os.link, (cur / "f", long)), (os.rename, (cur / "f", long)), (os.rename, (long, cur / "g")),
                       (os.unlink, (long,)), (os.rmdir, (long,)), (os.chmod, (long, 0o600)),
                       (os.chown, (long, 1, 1)), (os.truncate, (long, 0)), (os.symlink, ("f", long)),
                       (os.mknod, (long,)), (os.listdir, (cur / ("d" * 256),))]:  # fmt: skip
        fails(errno.ENAMETOOLONG, call, *args)
    fails(errno.ENOTEMPTY, os.rmdir, cur / "d")
    fails(errno.EXDEV, os.rename, cur / "f", m / "h2" / "current" / "f")
    fails(errno.EXDEV, os.link, cur / "f", m / "h2" / "current" / "f")
    fails(errno.EEXIST, os.mkdir, cur / "d")
    fails(errno.ENOENT, os.stat, cur / "missing")
    fails(errno.EINVAL, os.rename, cur / "d", cur / "d" / "inside")
    fails(errno.EPERM, open, m / "h1" / "file-beside-current", "w")
    os.mkdir(m / "h1" / "snapshots" / "s")
    snap = m / "h1" / "snapshots" / "s"
    fails(errno.EROFS, open, snap / "f", "w")
    fails(errno.EROFS, os.unlink, snap / "f")
    fails(errno.EROFS, os.chmod, snap / "f", 0o600)
    fails(errno.EROFS, os.mkdir, snap / "new")
    fails(errno.EEXIST, os.mkdir, m / "h1" / "snapshots" / "s")
    fails(errno.EINVAL, os.mkdir, m / "bad\nname")
    os.chmod(cur / "d", 0o700)
    os.chown(cur / "d", 0, 0)
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    denied = subprocess.run([*drop, "ls", str(cur / "d")], capture_output=True, text=True)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


def test_two_rsyncs_at_once_and_reading_while_writing(tmp_path: Path, mounted: Mounted) -> None:
    m = mounted.path
    trees = []
    for name in ("a", "b"):
        src = tmp_path / name
        make_tree(src, seed=ord(name))
        trees.append(src)
        os.mkdir(m / name)
    os.mkdir(m / "a" / "snapshots" / "empty")
    procs = [
        subprocess.Popen(["rsync", "-aHAXS", "--numeric-ids", f"{src}/", f"{m / src.name / 'current'}/"])
        for src in trees
    ]
    reads = 0
    while any(p.poll() is None for p in procs):
        reads += len(os.listdir(m / "a" / "snapshots" / "empty"))
        os.stat(m / "b" / "current")
    assert [p.wait() for p in procs] == [0, 0]
    for src in trees:
        os.mkdir(m / src.name / "snapshots" / "full")
        assert rsync_differences(src, m / src.name / "snapshots" / "full") == []


def test_full_spool_disk_is_enospc_and_loses_nothing(tmp_path: Path) -> None:
    # A space in the mountpoint: /proc/mounts escapes it, and the stale-mount check must still match.
    m = Mounted(tmp_path / "data", tmp_path / "the mnt", tmp_path / "mount.log")
    spool = m.data / "spool"
    spool.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(spool)], check=True)
    m.path.mkdir()
    m.start()
    try:
        os.mkdir(m.path / "h1")
        f = m.path / "h1" / "current" / "f"
        data = os.urandom(3 << 20)
        f.write_bytes(data)  # in order: needs no spool disk
        fd = os.open(f, os.O_RDWR)
        try:
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"overwrite in the middle", 100)  # out of order: needs 3 MiB of spool
        finally:
            os.close(fd)
        assert e.value.errno == errno.ENOSPC
        assert f.read_bytes() == data
        os.mkdir(m.path / "h1" / "snapshots" / "s")
        assert (m.path / "h1" / "snapshots" / "s" / "f").read_bytes() == data
        m.stop()
    finally:
        if m.proc is not None and m.proc.poll() is None:
            m.stop()
        subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)
        subprocess.run(["umount", "-l", str(spool)], check=True)
    m.assert_clean_log()
