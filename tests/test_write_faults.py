"""Writes that cannot be stored: the client hears it at close() or fsync(), and no snapshot takes the file.

A full data disk under the mount (a real tmpfs), stock dd, cp and rsync as
clients; a stopped S3 server under a write-back spool, and a mount told to
stop meanwhile.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from engine.deployment import Deployment
from engine.errors import BackendError, LostWrites, NoSpace
from engine.storage.filter import Filter
from engine.storage.local import LocalBackend
from engine.storage.retry import Retry
from engine.storage.spool import Spool
from engine.worktree.tree import ROOT

from .davshare import share
from .servers import seaweedfs
from .test_faults import tmpfs
from .test_mount import CAIRN, Mounted, rsync
from .trees import make_tree, rsync_differences

STOP_BOUND = 15.0  # seconds: a liveness bound for SIGTERM, not a performance figure
DRAIN_WAIT = 120.0


def _fill(current: Path) -> subprocess.CompletedProcess[str]:
    """dd more random bytes into the mount than its data disk holds."""
    return subprocess.run(
        ["dd", "if=/dev/urandom", f"of={current / 'big'}", "bs=1M", "count=96"], capture_output=True, text=True
    )


@pytest.mark.slow
def test_a_full_data_disk_fails_close_and_the_snapshot_names_the_files(tmp_path: Path) -> None:
    data, src = tmp_path / "data", tmp_path / "src"
    src.mkdir()
    small = os.urandom(100 << 10)
    (src / "small").write_bytes(small)
    with tmpfs(data, "64m"):
        m = Mounted(data, tmp_path / "mnt", tmp_path / "mount.log")
        m.path.mkdir()
        m.start()
        try:
            os.mkdir(m.path / "h1")
            current = m.path / "h1" / "current"
            dd = _fill(current)
            assert dd.returncode != 0 and "No space left on device" in dd.stderr, dd.stderr
            # A small file is written in memory; its bytes are stored at close(), which must fail.
            cp = subprocess.run(["cp", str(src / "small"), str(current / "small")], capture_output=True, text=True)
            assert cp.returncode != 0 and "No space left on device" in cp.stderr, cp.stderr
            rsync = subprocess.run(["rsync", "-a", f"{src}/", f"{current / 'dir'}/"], capture_output=True, text=True)
            assert rsync.returncode != 0 and "No space left on device" in rsync.stderr, rsync.stderr
            assert os.listdir(current / "dir") == []  # rsync removed its temporary file
            subprocess.run(["mount", "-o", "remount,size=512m", str(data)], check=True)  # space comes back
            with pytest.raises(OSError) as refused:
                os.mkdir(m.path / "h1" / "snapshots" / "s1")
            assert refused.value.errno == errno.EIO
            log = m.log.read_text()
            assert "snapshot refused" in log and "big" in log and "small" in log, log
            with pytest.raises(OSError) as unreadable:
                (current / "small").read_bytes()  # its bytes are not known: an error, not zeros
            assert unreadable.value.errno == errno.EIO
            # Written again (or removed), the files are snapshotted as the client wrote them.
            subprocess.run(["cp", str(src / "small"), str(current / "small")], check=True)
            os.unlink(current / "big")
            subprocess.run(["rsync", "-a", f"{src}/", f"{current / 'dir'}/"], check=True)
            os.mkdir(m.path / "h1" / "snapshots" / "s2")
            snap = m.path / "h1" / "snapshots" / "s2"
            assert (snap / "small").read_bytes() == small and (snap / "dir" / "small").read_bytes() == small
            assert sorted(os.listdir(snap)) == ["dir", "small"]
            m.stop()
        finally:
            if m.proc is not None and m.proc.poll() is None:
                m.stop()
            subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)


@pytest.mark.slow
def test_fsync_reports_a_pool_that_cannot_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with tmpfs(data, "64m"):
        m = Mounted(data, tmp_path / "mnt", tmp_path / "mount.log")
        m.path.mkdir()
        m.start()
        try:
            os.mkdir(m.path / "h1")
            current = m.path / "h1" / "current"
            assert _fill(current).returncode != 0
            fd = os.open(current / "synced", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.write(fd, b"x" * 1000)
                with pytest.raises(OSError) as e:
                    os.fsync(fd)
                assert e.value.errno == errno.ENOSPC
            finally:
                with pytest.raises(OSError):
                    os.close(fd)
            subprocess.run(["mount", "-o", "remount,size=512m", str(data)], check=True)
            m.stop()
        finally:
            if m.proc is not None and m.proc.poll() is None:
                m.stop()
            subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)


def test_lost_writes_refuse_the_snapshot_also_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pool = data / "pool"
    pool.mkdir(parents=True)
    with tmpfs(pool, "8m"):
        dep = Deployment.open(data)
        try:
            dep.add_source("h1")
            tree = dep.working_tree("h1")
            big = tree.create(ROOT, b"big", 0o644).ino
            tree.open(big)
            for i in range(24):  # a 16 MiB pack is sealed on the way, and its upload fails
                tree.write(big, i << 20, os.urandom(1 << 20))
            with pytest.raises(NoSpace):
                dep.blobs.flush()  # returns once the background upload has failed too
            with pytest.raises(NoSpace):
                for i in range(24, 32):  # chunks cut from here on cannot be stored
                    tree.write(big, i << 20, os.urandom(1 << 20))
            with pytest.raises(LostWrites) as closed:
                tree.flush(big)
            assert closed.value.errno == errno.ENOSPC
            tree.release(big)
            small = tree.create(ROOT, b"small", 0o644).ino
            tree.open(small)
            tree.write(small, 0, b"small file")
            with pytest.raises(NoSpace):
                tree.flush(small)  # what close() says
            tree.release(small)
            with pytest.raises(LostWrites, match=r"the last writes to big, small reached neither"):
                dep.create_snapshot("h1", "s1")
            subprocess.run(["mount", "-o", "remount,size=256m", str(pool)], check=True)
            dep.flush()
        finally:
            dep.close()
        with Deployment.open(data) as dep:
            with pytest.raises(LostWrites, match=r"big, small"):
                dep.create_snapshot("h1", "s1")
            tree = dep.working_tree("h1")
            tree.unlink(ROOT, b"big")
            ino = tree.resolve(b"small")
            tree.open(ino)
            tree.setattr(ino, size=0)  # O_TRUNC: every byte is the client's again
            tree.write(ino, 0, b"written again")
            tree.flush(ino)
            tree.release(ino)
            dep.create_snapshot("h1", "s1")
            assert dep.snapshot("h1", "s1").read(b"small") == b"written again"


def test_a_put_that_cannot_be_stored_is_not_a_201(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "48m") as mnt, share(mnt / "data") as s:
        assert s.put_streamed("/h1/current/big", 200) == 507  # no length: the disk fills on the way
        with pytest.raises(NoSpace):
            s.dep.blobs.flush()  # the failed pack is still not stored
        reply = s.request("PUT", "/h1/current/small", b"small file")  # its one chunk is stored at the end
        assert reply.status == 507, reply
        assert s.request("HEAD", "/h1/current/small").status == 404
        subprocess.run(["mount", "-o", "remount,size=512m", str(mnt)], check=True)
        s.dep.blobs.flush()
        assert s.request("PUT", "/h1/current/small", b"small file").status == 201


@pytest.mark.slow
def test_sigterm_with_the_pool_unreachable_stops_promptly_and_the_spool_drains_next_start(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    make_tree(src)
    with seaweedfs() as s3:
        s3.create_bucket("stop")
        config = tmp_path / "pool.json"
        config.write_text(json.dumps(s3.config("stop", filters={"spool": {}})))
        subprocess.run([*CAIRN, "--data", str(data), "pool", "create", str(config)], check=True, capture_output=True)
        m = Mounted(data, tmp_path / "mnt", tmp_path / "mount.log")
        m.path.mkdir()
        m.start()
        try:
            os.mkdir(m.path / "h1")
            s3.kill()  # the pool goes away; writes land in the spool
            current = m.path / "h1" / "current"
            rsync(src, current)
            os.mkdir(m.path / "h1" / "snapshots" / "s1")
            spool = data / "writeback"
            assert any(p.is_file() for p in spool.rglob("*"))
            assert m.proc is not None
            m.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            m.proc.wait(timeout=STOP_BOUND)  # 25-70 s while the drain kept retrying
            assert m.proc.returncode == 0 and time.monotonic() - started < STOP_BOUND
            assert not os.path.ismount(m.path)
            s3.start()
            m.start()
            deadline = time.monotonic() + DRAIN_WAIT
            while any(p.is_file() for p in spool.rglob("*")):
                assert time.monotonic() < deadline, "the spool did not drain"
                time.sleep(0.2)
            assert rsync_differences(src, m.path / "h1" / "snapshots" / "s1") == []
            m.stop()
        finally:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait()
            subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)


class Unreachable(Filter):
    """A pool whose puts fail as an unreachable service's do, until `up` is set."""

    def __init__(self, inner: LocalBackend):
        super().__init__(inner)
        self.up = threading.Event()
        self.tried = threading.Event()

    def put(self, key: str, data: bytes | memoryview) -> None:
        if not self.up.is_set():
            self.tried.set()
            raise BackendError("pool unreachable", temporary=True)
        self.inner.put(key, data)


def test_a_spool_stops_while_its_drain_backs_off_and_drains_on_the_next_start(tmp_path: Path) -> None:
    pool = Unreachable(LocalBackend(tmp_path / "pool"))
    retry = Retry(pool, first_delay=4.0, max_delay=8.0)  # a drain alone would back off for a minute or so
    spool = Spool(retry, tmp_path / "spool")
    spool.put("packs/aa/bb/one", b"queued while the pool is down")
    assert pool.tried.wait(STOP_BOUND)  # the drain is backing off now
    closer = threading.Thread(target=spool.close)
    closer.start()
    closer.join(STOP_BOUND)
    assert not closer.is_alive()
    assert spool.backlog() == (1, 29)
    pool.up.set()
    again = Spool(retry, tmp_path / "spool")
    try:
        assert again.wait_drained(DRAIN_WAIT)
        assert pool.inner.get("packs/aa/bb/one") == b"queued while the pool is down"
    finally:
        again.close()


def test_a_catalog_on_a_full_disk_is_no_space(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "8m") as mnt, Deployment.open(mnt / "data") as dep:
        dep.add_source("h1")
        filler = mnt / "filler"
        with open(filler, "wb") as f, pytest.raises(OSError) as full:
            while True:
                f.write(os.urandom(1 << 16))
                f.flush()
        assert full.value.errno == errno.ENOSPC
        with pytest.raises(NoSpace, match="catalog's disk is full"):
            for i in range(1000):  # more rows than the pages SQLite has left
                dep.add_source(f"h{i + 2}")
        filler.unlink()
        dep.add_source("after")  # room again: the catalog writes as before
