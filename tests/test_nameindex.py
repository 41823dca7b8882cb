"""The name index: a search by name across every snapshot of a source agrees with reading the snapshots."""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import pytest

from engine import nameindex
from engine.backup import backup_and_snapshot
from engine.catalog.schema import index_heads, index_versions
from engine.deployment import Deployment
from engine.meta import Kind
from engine.reader import walk_tree


def _snap(dep: Deployment, src: Path, name: str) -> None:
    backup_and_snapshot(dep, "s", str(src), name)


def _paths(found: list[nameindex.Found]) -> dict[str, tuple[str, str, int]]:
    return {os.fsdecode(f.path): (f.first, f.last, f.size) for f in found}


def test_a_deleted_file_is_found_in_the_snapshots_that_hold_it(deployment: Deployment, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "Docs").mkdir(parents=True)
    (src / "Docs" / "Report-2025.PDF").write_bytes(b"one")
    (src / "notes.txt").write_bytes(b"n")
    deployment.add_source("s")
    _snap(deployment, src, "a")
    (src / "Docs" / "Report-2025.PDF").write_bytes(b"two, longer")
    _snap(deployment, src, "b")
    (src / "Docs" / "Report-2025.PDF").unlink()
    _snap(deployment, src, "c")

    found, more = deployment.search("s", "report")
    assert not more
    assert _paths(found) == {"/Docs/Report-2025.PDF": ("a", "b", 11)}
    assert found[0].versions == 2 and found[0].kind == Kind.FILE
    assert _paths(deployment.search("s", "*.pdf")[0]) == {"/Docs/Report-2025.PDF": ("a", "b", 11)}
    assert _paths(deployment.search("s", "docs")[0]) == {"/Docs": ("a", "c", 0)}
    assert deployment.search("s", "*.txt")[0][0].first == "a"
    assert deployment.search("s", "rep?rt")[0] == []  # a pattern matches the whole name
    assert deployment.search("s", "%")[0] == [] and deployment.search("s", "_")[0] == []  # taken as they are


def test_limit_says_there_are_more(deployment: Deployment, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"file{i:02}").write_bytes(b"x")
    deployment.add_source("s")
    _snap(deployment, src, "a")
    found, more = deployment.search("s", "file", limit=5)
    assert len(found) == 5 and more
    assert len(deployment.search("s", "file", limit=12)[0]) == 12 and not deployment.search("s", "file", limit=12)[1]


def _mutate(rng: random.Random, src: Path, step: int) -> None:
    """Add, change, remove files; turn folders into files and back."""
    for _ in range(rng.randint(1, 6)):
        folder = src / f"d{rng.randint(0, 3)}" / f"e{rng.randint(0, 2)}"
        what = rng.random()
        target = folder / f"f{rng.randint(0, 5)}"
        if what < 0.5:
            if folder.is_file():
                _remove(folder)
            folder.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                _remove(target)
            target.write_bytes(b"v%d" % step)
            os.utime(target, (1_000_000 + step, 1_000_000 + step))
        elif what < 0.7 and target.exists():
            _remove(target)
        elif what < 0.8 and folder.exists():
            _remove(folder)
            if rng.random() < 0.5:
                folder.write_bytes(b"now a file")  # a folder becomes a file of the same name
        elif what < 0.9 and folder.parent.exists():
            shutil.rmtree(folder.parent)


def _remove(path: Path) -> None:
    path.unlink() if path.is_file() else shutil.rmtree(path)


def _truth(dep: Deployment) -> dict[str, tuple[str, str, int]]:
    """Each path with the oldest and newest snapshot holding it, and its size in the newest: read from the trees."""
    out: dict[str, tuple[str, str, int]] = {}
    for info in dep.list_snapshots("s"):
        view = dep.snapshot("s", info.name)
        for path, e in walk_tree(view.root, b"", lambda d, _, v=view: iter(v.listing(d).values())):  # type: ignore[misc]
            key = "/" + os.fsdecode(path)
            first = out[key][0] if key in out else info.name
            out[key] = (first, info.name, 0 if e.kind == Kind.DIR else e.size)
    return out


def test_random_snapshots_and_deletions_agree_with_the_trees(deployment: Deployment, tmp_path: Path) -> None:
    rng = random.Random(7)
    src = tmp_path / "src"
    src.mkdir()
    deployment.add_source("s")
    for step in range(24):
        _mutate(rng, src, step)
        _snap(deployment, src, f"n{step:02}")
        names = [s.name for s in deployment.list_snapshots("s")]
        if rng.random() < 0.35 and len(names) > 1:
            deployment.delete_snapshot("s", rng.choice(names))  # the newest too, at times
        if step % 3 == 2:
            found, more = deployment.search("s", "*", limit=1000)
            assert not more
            assert _paths(found) == _truth(deployment), f"after step {step}"


def test_snapshots_before_the_index_are_indexed_at_the_first_search(deployment: Deployment, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept.txt").write_bytes(b"k")
    deployment.add_source("s")
    _snap(deployment, src, "a")
    _snap(deployment, src, "b")
    sid = deployment.source("s").id
    deployment.index_names("s")  # what the background started, done
    with deployment.catalog.engine.begin() as conn:  # as a catalog from before the index has it
        nameindex.drop(conn, sid)
    assert _paths(deployment.search("s", "kept")[0]) == {"/kept.txt": ("a", "b", 1)}


def test_a_stopped_indexing_is_taken_back(deployment: Deployment, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"old{i}").write_bytes(b"o")
    deployment.add_source("s")
    _snap(deployment, src, "a")
    deployment.index_names("s")
    for i in range(30):
        (src / f"old{i}").unlink()
        (src / f"new{i}").write_bytes(b"n")
    monkeypatch.setattr(deployment, "_index_later", lambda source: None)  # indexed below, by hand
    _snap(deployment, src, "b")
    monkeypatch.setattr(nameindex, "BATCH", 7)  # some batches are written before it stops
    real = nameindex._Writer.add
    calls = 0

    def stop_half_way(self: nameindex._Writer, change: nameindex.Change) -> None:
        nonlocal calls
        calls += 1
        if calls == 40:
            raise OSError("stopped")
        real(self, change)

    monkeypatch.setattr(nameindex._Writer, "add", stop_half_way)
    with pytest.raises(OSError, match="stopped"):
        deployment.index_names("s")
    monkeypatch.setattr(nameindex._Writer, "add", real)
    with deployment.catalog.engine.connect() as conn:
        written = conn.execute(index_versions.select().where(index_versions.c.first_id > 0)).all()
        assert len(written) > 30  # the stopped one wrote some rows of its own
        assert conn.execute(index_heads.select()).one().snapshot_id < max(r.first_id for r in written)
    found = _paths(deployment.search("s", "*", limit=1000)[0])
    assert found == _truth(deployment)
    assert found["/old0"] == ("a", "a", 1) and found["/new0"] == ("b", "b", 1)


def test_a_snapshot_is_indexed_in_the_background(deployment: Deployment, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    deployment.add_source("s")
    _snap(deployment, src, "a")
    sid = deployment.source("s").id
    for _ in range(200):
        with deployment.catalog.engine.connect() as conn:
            if conn.execute(index_heads.select().where(index_heads.c.source_id == sid)).first() is not None:
                break
        time.sleep(0.05)
    else:
        raise AssertionError("snapshot a was not indexed in 10 s")
    assert deployment.index_names("s") == 0  # nothing left for a search to do


def test_removing_a_source_drops_its_index(deployment: Deployment, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    deployment.add_source("s")
    _snap(deployment, src, "a")
    deployment.delete_snapshot("s", "a")
    deployment.remove_source("s")
    with deployment.catalog.engine.connect() as conn:
        assert conn.execute(index_versions.select()).all() == []
        assert conn.execute(index_heads.select()).all() == []
