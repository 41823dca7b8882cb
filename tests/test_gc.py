"""Garbage collection: deleting snapshots frees space; nothing a snapshot or backup uses is lost."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from engine import gc
from engine.backup import backup_and_snapshot as _backup_and_snapshot
from engine.check import check_pool
from engine.deployment import Deployment
from engine.errors import InUse
from engine.restore import restore

from .test_backup_restore import cairn_json
from .trees import rsync_differences


def _tree(root: Path, seed: int, files: int = 12, size: int = 300_000) -> Path:
    """Incompressible files, so pool sizes follow what is live."""
    root.mkdir(parents=True)
    rnd = __import__("random").Random(seed)
    for i in range(files):
        (root / f"f{i}").write_bytes(rnd.randbytes(size + i))
    return root


def backup_and_snapshot(dep: Deployment, source: str, path: str, name: str) -> None:
    if source not in {s.name for s in dep.list_sources()}:
        dep.add_source(source)
    _backup_and_snapshot(dep, source, path, name)


def _restored_equal(dep: Deployment, source: str, snapshot: str, src: Path, out: Path) -> bool:
    restore(dep.snapshot(source, snapshot), b"", str(out))
    return rsync_differences(src, out) == []


def test_deleting_a_snapshot_frees_its_space_after_gc(tmp_path: Path, db_url: str) -> None:
    a, b = _tree(tmp_path / "a", 1), _tree(tmp_path / "b", 2)
    with Deployment.open(tmp_path / "data", db_url) as dep:
        backup_and_snapshot(dep, "h1", str(a), "a")
        backup_and_snapshot(dep, "h1", str(b), "b")  # the working tree now holds only b
        before = dep.pool_usage()["stored_bytes"]
        dep.delete_snapshot("h1", "a")
        dry = gc.collect(dep, dry_run=True)
        assert dry.bytes_freed > 3_000_000 and dep.pool_usage()["stored_bytes"] == before
        report = gc.collect(dep)
        after = dep.pool_usage()["stored_bytes"]
        assert report.dead_blobs >= 12 and report.bytes_freed == before - after
        assert before - after > 3_000_000  # a's 3.6 MB of noise is gone
        assert _restored_equal(dep, "h1", "b", b, tmp_path / "out-b")
        assert check_pool(dep.blobs).ok
        again = gc.collect(dep)
        assert again.dead_blobs == 0 and again.packs_deleted == 0


def test_sparse_packs_are_repacked(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", 3, files=30, size=100_000)
    with Deployment.open(tmp_path / "data") as dep:
        backup_and_snapshot(dep, "h1", str(src), "one")
        for i in range(0, 30, 3):  # a third of the files go: their packs stay 2/3 live
            (src / f"f{i}").unlink()
        backup_and_snapshot(dep, "h1", str(src), "two")
        dep.delete_snapshot("h1", "one")
        assert gc.collect(dep).packs_deleted == 0  # live enough at the default threshold
        report = gc.collect(dep, repack_below=0.9)
        assert (
            report.packs_written >= 1 and report.packs_deleted >= 1 and report.dead_blobs >= 10
        )  # files, and the old snapshot's trees
        assert _restored_equal(dep, "h1", "two", src, tmp_path / "out")
        assert check_pool(dep.blobs).ok


def test_a_backup_during_gc_keeps_what_it_dedups_against(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _tree(tmp_path / "a", 4), _tree(tmp_path / "b", 5)
    with Deployment.open(tmp_path / "data") as dep:
        backup_and_snapshot(dep, "h1", str(a), "a")
        backup_and_snapshot(dep, "h1", str(b), "b")
        dep.delete_snapshot("h1", "a")
        marked = gc.mark

        def mark_then_back_up_a_again(*args: Any) -> set[bytes]:
            live = marked(*args)  # a's blobs are dead now ...
            backup_and_snapshot(dep, "h2", str(a), "a-again")  # ... and a backup dedups against them
            return live

        monkeypatch.setattr(gc, "mark", mark_then_back_up_a_again)
        report = gc.collect(dep)
        assert report.kept_blobs >= 12
        monkeypatch.setattr(gc, "mark", marked)
        assert _restored_equal(dep, "h2", "a-again", a, tmp_path / "out-a")
        assert check_pool(dep.blobs).ok
        dep.delete_snapshot("h2", "a-again")
        dep.remove_source("h2")
        assert gc.collect(dep).dead_blobs >= 12  # collected next time


def test_a_blob_stored_again_after_gc_dropped_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _tree(tmp_path / "a", 7), _tree(tmp_path / "b", 8)
    with Deployment.open(tmp_path / "data") as dep:
        backup_and_snapshot(dep, "h1", str(a), "a")
        backup_and_snapshot(dep, "h1", str(b), "b")
        dep.delete_snapshot("h1", "a")
        rewrite = gc._rewrite

        def store_a_again_first(*args: Any) -> Any:
            backup_and_snapshot(dep, "h2", str(a), "a-again")  # a's chunks were just dropped: stored anew
            return rewrite(*args)

        monkeypatch.setattr(gc, "_rewrite", store_a_again_first)
        gc.collect(dep)
        monkeypatch.setattr(gc, "_rewrite", rewrite)
        assert _restored_equal(dep, "h2", "a-again", a, tmp_path / "out-a")
        assert check_pool(dep.blobs).ok


def test_backups_keep_running_while_gc_runs(tmp_path: Path) -> None:
    trees = [_tree(tmp_path / f"t{i}", 10 + i, files=6) for i in range(4)]
    with Deployment.open(tmp_path / "data") as dep:
        for i, t in enumerate(trees):
            backup_and_snapshot(dep, "h1", str(t), f"s{i}")
        for i in (0, 2):
            dep.delete_snapshot("h1", f"s{i}")
        done = threading.Event()
        errors: list[BaseException] = []

        def keep_backing_up() -> None:
            try:
                n = 0
                while not done.is_set() or n < 4:
                    backup_and_snapshot(dep, "h2", str(trees[n % 4]), f"r{n}")
                    n += 1
            except BaseException as e:
                errors.append(e)

        writer = threading.Thread(target=keep_backing_up)
        writer.start()
        for _ in range(3):
            gc.collect(dep, repack_below=0.9)
        done.set()
        writer.join(120)
        assert not writer.is_alive() and not errors
        for info in dep.list_snapshots():
            src = trees[int(info.name[1:]) % 4]
            assert _restored_equal(dep, info.source, info.name, src, tmp_path / "out" / f"{info.source}-{info.name}")
        assert check_pool(dep.blobs).ok


def test_gc_refuses_while_another_process_writes(tmp_path: Path) -> None:
    with Deployment.open(tmp_path / "data") as dep:
        dep.add_source("h1")
        dep.working_tree("h1")
        with Deployment.open(tmp_path / "data") as other, pytest.raises(InUse):
            gc.collect(other)


def test_cli_gc(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", 6, files=3)
    data = tmp_path / "data"
    cairn_json(data, "backup", "h1", str(a), "--snapshot", "a")
    for f in a.iterdir():
        f.write_bytes(os.urandom(1000))
    cairn_json(data, "backup", "h1", str(a), "--snapshot", "b")
    cairn_json(data, "snapshot", "delete", "h1", "a")
    report = cairn_json(data, "pool", "gc")
    assert isinstance(report, dict) and report["dead_blobs"] >= 3 and report["bytes_freed"] > 900_000
