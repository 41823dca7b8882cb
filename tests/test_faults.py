"""Faults: killed backups, full disks. Committed snapshots are never damaged."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine import errors
from engine.deployment import Deployment
from engine.worktree.tree import ROOT

from .test_backup_restore import CAIRN, cairn, cairn_json
from .test_worktree import _write
from .trees import rsync_differences


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _mutate(src: Path, rnd: random.Random, step: int) -> None:
    """Change a tenth of a tree of about 600 files and a few big ones."""
    for _ in range(60):
        d = src / f"d{rnd.randrange(20):02}"
        d.mkdir(exist_ok=True)
        f = d / f"f{rnd.randrange(40):03}"
        if f.exists() and rnd.random() < 0.2:
            f.unlink()
        else:
            f.write_bytes(rnd.randbytes(rnd.randrange(0, 20_000)) + b"step %d" % step)
    big = src / f"big{rnd.randrange(3)}"
    big.write_bytes(rnd.randbytes(6 << 20))
    if rnd.random() < 0.3:
        link = src / f"link{step}"
        os.link(big, link)


def test_killed_backups_never_damage_committed_snapshots(tmp_path: Path) -> None:
    rnd = random.Random(7)
    src, data, kept = tmp_path / "src", tmp_path / "data", tmp_path / "kept"
    src.mkdir()
    kept.mkdir()
    committed: dict[str, Path] = {}
    kills = 0
    log = tmp_path / "stderr"
    last = 1.0
    for step in range(20):
        _mutate(src, rnd, step)
        name = f"s{step}"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [*CAIRN, "--data", str(data), "backup", "h1", str(src), "--snapshot", name],
                stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
            try:
                # Every other backup is killed at a random point of a run as long as the last one.
                started = time.monotonic()
                proc.wait(timeout=rnd.uniform(0.1, 1.0) * last if step % 2 else 120)
                last = time.monotonic() - started
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
        if proc.returncode == 0:
            subprocess.run(["cp", "-a", str(src), str(kept / name)], check=True)
            committed[name] = kept / name
        else:
            assert proc.returncode == -signal.SIGKILL, log.read_text()
    assert kills >= 6 and len(committed) >= 10, (kills, len(committed))
    # One more, not killed: the working tree left by the kills backs up correctly.
    cairn(data, "backup", "h1", str(src), "--snapshot", "final")
    committed["final"] = src
    listed = {s["name"] for s in cairn_json(data, "snapshot", "list", "h1")}  # type: ignore[union-attr, index]
    assert set(committed) <= listed
    for name in sorted(listed):
        out = tmp_path / "restore" / name
        cairn(data, "restore", "h1", name, str(out))
        if name in committed:
            assert rsync_differences(committed[name], out) == [], name
        shutil.rmtree(out)
    check = cairn_json(data, "pool", "scrub")
    assert isinstance(check, dict) and check["ok"]


def test_full_spool_disk_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with tmpfs(data / "spool", "1m"), Deployment.open(data) as dep:
        dep.add_source("h1")
        tree = dep.working_tree("h1")
        big = os.urandom(3 << 20)
        ino = tree.create(ROOT, b"f", 0o644).ino
        tree.open(ino)
        tree.write(ino, 0, big)  # in order: needs no spool disk
        with pytest.raises(errors.NoSpace, match="spool disk is full"):
            tree.write(ino, 100, b"back")  # out of order: needs 3 MiB of spool
        assert tree.read(ino, 0, len(big)) == big
        tree.release(ino)
        assert tree.read(ino, 0, len(big)) == big
        tree.open(ino)
        with pytest.raises(errors.NoSpace):
            tree.write(ino, 5, b"into existing content")
        tree.release(ino)
        dep.create_snapshot("h1", "s")
        assert dep.snapshot("h1", "s").read(b"f") == big


def test_full_pool_disk_fails_the_backup_cleanly(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    src.mkdir()
    (src / "small").write_bytes(b"small file")
    cairn(data, "backup", "h1", str(src), "--snapshot", "before")
    pool = data / "pool"
    shutil.move(pool, tmp_path / "pool-copy")
    with tmpfs(pool, "4m"):
        subprocess.run(f"cp -a {tmp_path / 'pool-copy'}/. {pool}/", shell=True, check=True)
        (src / "big").write_bytes(os.urandom(12 << 20))
        proc = cairn(data, "backup", "h1", str(src), "--snapshot", "after", check=False)
        assert proc.returncode == 1
        assert "is full" in proc.stderr and "Traceback" not in proc.stderr
        assert [s["name"] for s in cairn_json(data, "snapshot", "list")] == ["before"]  # type: ignore[index]
        cairn(data, "restore", "h1", "before", str(tmp_path / "out"))
        assert (tmp_path / "out" / "small").read_bytes() == b"small file"
        subprocess.run(["mount", "-o", "remount,size=64m", str(pool)], check=True)
        cairn(data, "backup", "h1", str(src), "--snapshot", "after")
        cairn(data, "restore", "h1", "after", str(tmp_path / "out2"))
        assert rsync_differences(src, tmp_path / "out2") == []
        check = cairn_json(data, "pool", "scrub")
        assert isinstance(check, dict) and check["ok"]


def test_backup_waits_for_nothing_when_killed_mid_snapshot_and_rerun(tmp_path: Path) -> None:
    """A kill right after a backup's walk still leaves a catalog that opens and backs up."""
    src, data = tmp_path / "src", tmp_path / "data"
    src.mkdir()
    for i in range(300):
        (src / f"f{i}").write_bytes(os.urandom(3000))
    for delay in (0.5, 0.8, 1.1):
        proc = subprocess.Popen([*CAIRN, "--data", str(data), "backup", "h1", str(src)], stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
    cairn(data, "backup", "h1", str(src), "--snapshot", "ok")
    cairn(data, "restore", "h1", "ok", str(tmp_path / "out"))
    assert rsync_differences(src, tmp_path / "out") == []


class Flaky:
    """A backend that fails every put of a pack while `broken` is set: a full pool (or, given
    another error, an unreachable one)."""

    def __init__(self, inner, error=lambda: errors.NoSpace("pool is full (injected)")):  # type: ignore[no-untyped-def]
        self.inner = inner
        self.error = error
        self.broken = False

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes) -> None:
        if self.broken and key.startswith("packs/"):
            raise self.error()
        self.inner.put(key, data)


def test_failed_uploads_hold_writes_back_until_a_flush_stores_them(data_dir: Path) -> None:
    with Deployment.open(data_dir) as dep:
        flaky = Flaky(dep.blobs.backend)
        dep.blobs.backend = flaky
        dep.add_source("h1")
        tree = dep.working_tree("h1")
        flaky.broken = True
        big = os.urandom(20 << 20)  # more than a pack: its upload fails in the background
        _write(tree, ROOT, b"big", big)
        with pytest.raises(errors.NoSpace):
            dep.blobs.flush()
        with pytest.raises(errors.NoSpace):
            dep.blobs.put(os.urandom(1000))
        flaky.broken = False
        dep.blobs.flush_if_older(3600)  # a failed upload is retried even when nothing is old
        dep.blobs.put(os.urandom(1000))
        dep.create_snapshot("h1", "s")
        assert dep.snapshot("h1", "s").read(b"big") == big


def test_a_write_lost_at_release_makes_the_quick_check_fail(data_dir: Path) -> None:
    with Deployment.open(data_dir) as dep:
        dep.add_source("h1")
        tree = dep.working_tree("h1")
        ino = tree.create(ROOT, b"f", 0o644).ino
        tree.open(ino)
        tree.write(ino, 0, b"data that cannot be stored")
        tree.setattr(ino, mtime_ns=123)
        dep.blobs._failure = errors.NoSpace("injected")  # the encoders failed
        with pytest.raises(errors.NoSpace):
            tree.release(ino)
        st = tree.stat(ino)
        assert (st.size, st.mtime_ns) == (len(b"data that cannot be stored"), 0)
        with pytest.raises(errors.LostWrites):
            tree.read(ino, 0, st.size)  # its bytes are not known: never zeros
        dep.blobs._failure = None


def test_crash_after_trees_committed_but_not_stored(data_dir: Path) -> None:
    from sqlalchemy import delete

    from engine.catalog.schema import leases
    from engine.worktree.freeze import freeze

    dep = Deployment.open(data_dir)
    dep.add_source("h1")
    tree = dep.working_tree("h1")
    d = tree.mkdir(ROOT, b"d", 0o755).ino
    _write(tree, d, b"f", b"one")
    dep.create_snapshot("h1", "one")
    _write(tree, d, b"g", b"two")
    dep.blobs.flush()
    freeze(tree)  # new tree blobs, still pending in memory
    tree.commit()  # a background commit writes the directories' tree ids
    # The process dies here: nothing more is flushed. A new one takes over.
    with dep.catalog.engine.begin() as conn:
        conn.execute(delete(leases))
    with Deployment.open(data_dir) as again:
        again.create_snapshot("h1", "two")
        view = again.snapshot("h1", "two")
        assert view.read(b"d/g") == b"two" and view.read(b"d/f") == b"one"


def test_close_with_an_open_unlinked_file(data_dir: Path) -> None:
    with Deployment.open(data_dir) as dep:
        dep.add_source("h1")
        tree = dep.working_tree("h1")
        ino = _write(tree, ROOT, b"f", b"x")
        tree.open(ino)
        tree.write(ino, 0, b"more")
        tree.unlink(ROOT, b"f")
    with Deployment.open(data_dir) as dep:
        assert dep.working_tree("h1").listdir(ROOT) == []


def test_writes_pause_while_the_pool_is_unreachable_and_resume(data_dir: Path) -> None:
    import threading

    with Deployment.open(data_dir) as dep:
        pool = Flaky(dep.blobs.backend, lambda: errors.BackendError("pool unreachable (injected)", temporary=True))
        dep.blobs.backend = pool
        dep.add_source("h1")
        tree = dep.working_tree("h1")
        pool.broken = True
        big = os.urandom(20 << 20)
        failed: list[BaseException] = []

        def back_up() -> None:
            try:
                _write(tree, ROOT, b"big", big)
                dep.create_snapshot("h1", "s")
            except BaseException as e:
                failed.append(e)

        writer = threading.Thread(target=back_up)
        writer.start()
        deadline = time.monotonic() + 60
        while dep.blobs.offline is None:  # paused, not failed
            assert time.monotonic() < deadline and writer.is_alive(), failed
            time.sleep(0.05)
        assert "unreachable" in dep.blobs.offline and dep.list_snapshots() == []
        pool.broken = False  # the pool answers again: the backup goes on by itself
        writer.join(120)
        assert not writer.is_alive() and not failed
        assert dep.snapshot("h1", "s").read(b"big") == big and dep.blobs.offline is None
        pool.broken = True
        dep.blobs.pause_max = 0.5  # a pool that stays away: the error reaches the writer in the end
        _write(tree, ROOT, b"more", os.urandom(20 << 20))
        with pytest.raises(errors.BackendError):
            dep.blobs.flush()
        pool.broken = False


def test_a_pool_whose_creation_was_cut_short_is_taken_over(tmp_path: Path) -> None:
    """Killed between writing cairn-pool.json and committing the catalog: the empty pool is adopted."""
    data = tmp_path / "data"
    with Deployment.open(data) as dep:
        uuid = dep.pool.uuid
    for suffix in ("", "-wal", "-shm"):
        (data / f"catalog.db{suffix}").unlink(missing_ok=True)  # as if the first commit never happened
    with Deployment.open(data) as dep:
        assert dep.pool.uuid == uuid
        dep.add_source("h1")
        dep.create_snapshot("h1", "s")  # now the pool holds packs and a snapshot
    for suffix in ("", "-wal", "-shm"):
        (data / f"catalog.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(errors.PoolMismatch):  # a pool with data is never adopted silently
        Deployment.open(data)
