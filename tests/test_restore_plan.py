"""Restores read by plan: pack by pack, the catalog in batches, files written as their blobs arrive."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from sqlalchemy import event

from engine.backup import backup_and_snapshot
from engine.deployment import Deployment
from engine.errors import BackendError
from engine.fetch import GAP, BlobLocation, plan
from engine.restore import RestoreStats, restore
from engine.storage.faults import FaultyBackend

from .trees import rsync_differences

MiB = 1 << 20


def _many_files(src: Path, seed: int = 5) -> int:
    """~1,500 small distinct files in 30 directories, a big file, duplicates, holes, links; returns the file count."""
    rnd = random.Random(seed)
    count = 0
    for d in range(30):
        (src / f"d{d:02}").mkdir(parents=True)
        for f in range(50):
            (src / f"d{d:02}" / f"f{f:03}").write_bytes(rnd.randbytes(rnd.randrange(0, 3000)))
            count += 1
    (src / "big").write_bytes(rnd.randbytes(5 * MiB))
    same = rnd.randbytes(40_000)
    (src / "same1").write_bytes(same)
    (src / "same2").write_bytes(same + same)  # one blob twice in a file, and once in another
    with open(src / "sparse", "wb") as f:
        f.write(rnd.randbytes(1000))
        f.seek(4 * MiB)
        f.write(rnd.randbytes(1000))
        f.truncate(9 * MiB)  # a hole at the end too
    os.link(src / "big", src / "big-link")
    os.symlink("big", src / "big-symlink")
    (src / "empty").write_bytes(b"")
    os.chmod(src / "d03" / "f001", 0o4751)
    os.setxattr(src / "d04" / "f002", b"user.note", b"kept")
    os.utime(src / "d05", ns=(1_000_000_000, 1_500_000_000_000_000_000))
    return count + 7


def test_a_restore_reads_pack_by_pack_and_asks_the_catalog_in_batches(tmp_path: Path, db_url: str) -> None:
    src, data, dest = tmp_path / "src", tmp_path / "data", tmp_path / "dest"
    files = _many_files(src)
    with Deployment.open(data, db_url) as dep:
        dep.add_source("h")
        backup_and_snapshot(dep, "h", src, "s")
    with Deployment.open(data, db_url) as dep:
        packs = dep.pool_usage()["packs"]
        faulty = FaultyBackend(dep.blobs.backend)
        dep.blobs.backend = faulty
        statements: list[str] = []
        event.listen(dep.catalog.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        seen: list[tuple[int, int, int, int]] = []

        def progress(s: RestoreStats) -> None:
            seen.append((s.files, s.total_files, s.bytes, s.total_bytes))

        stats = restore(dep.snapshot("h", "s"), b"", dest, progress)
    assert rsync_differences(src, dest) == []
    assert os.stat(dest / "sparse").st_blocks * 512 < 1 * MiB  # the holes stayed holes
    assert stats.errors == [] and stats.files == files
    # Each pack in a few ranged reads (trees and data are read apart), not one per blob;
    # the catalog once per 500 blobs, not once per blob: the same on PostgreSQL as on SQLite.
    assert faulty.calls["get"] <= 4 * packs, (faulty.calls, packs)
    blob_lookups = [s for s in statements if "FROM blobs" in s]
    assert 0 < len(blob_lookups) <= 12, len(blob_lookups)
    assert seen[-1] == (files, files, stats.bytes, stats.bytes)
    assert all(total == files for _, total, _, _ in seen)
    inodes = {p.lstat().st_ino: p.lstat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink()}
    assert stats.bytes == sum(inodes.values())  # a hard link's bytes once


def test_a_restore_leaves_no_temporary_names_and_runs_no_extra_calls_without_overwrite(tmp_path: Path) -> None:
    src, data, dest = tmp_path / "src", tmp_path / "data", tmp_path / "dest"
    _many_files(src, seed=6)
    with Deployment.open(data) as dep:
        dep.add_source("h")
        backup_and_snapshot(dep, "h", src, "s")
        restore(dep.snapshot("h", "s"), b"d07", dest)
        restore(dep.snapshot("h", "s"), b"d07", dest, overwrite=True)  # again, over itself
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in (src / "d07").iterdir())
    assert rsync_differences(src / "d07", dest) == []


def test_a_plan_reads_a_pack_in_order_and_spans_small_gaps_only() -> None:
    at = [(b"a", BlobLocation("p1", 0, 100, 100)), (b"b", BlobLocation("p2", 0, 50, 50)),
          (b"c", BlobLocation("p1", 160 + GAP + 1, 10, 10)), (b"d", BlobLocation("p1", 150, 10, 10))]  # fmt: skip
    spans = plan(at)
    assert [(s.pack, s.start, s.end, [b for b, _ in s.blobs]) for s in spans] == [
        ("p1", 0, 160, [b"a", b"d"]),  # first needed first; in offset order; a 50-byte gap read through
        ("p1", 160 + GAP + 1, 160 + GAP + 11, [b"c"]),  # too far: a range of its own
        ("p2", 0, 50, [b"b"]),
    ]


def test_a_single_file_whose_pool_does_not_answer_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    src, data, dest = tmp_path / "src", tmp_path / "data", tmp_path / "dest"
    src.mkdir()
    (src / "f").write_bytes(random.Random(8).randbytes(300_000))
    with Deployment.open(data) as dep:
        dep.add_source("h")
        backup_and_snapshot(dep, "h", src, "s")
    with Deployment.open(data) as dep:
        view = dep.snapshot("h", "s")
        view.lookup(b"f")  # its trees are read while the pool answers
        faulty = FaultyBackend(dep.blobs.backend)
        faulty.fail("get", range(1, 100))
        dep.blobs.backend = faulty
        dest.mkdir()
        with pytest.raises(BackendError, match="injected failure"):  # not reported as damage: nothing is damaged
            restore(view, b"f", dest / "f")
    assert list(dest.iterdir()) == []  # no partial file, no temporary name
