"""Snapshots: Merkle trees that cost what changed, the read API, diff, dedup."""

from __future__ import annotations

import os

import pytest

from engine import errors
from engine.deployment import Deployment
from engine.reader import diff
from engine.worktree.tree import ROOT

from .test_worktree import _write as _put


def test_snapshot_after_one_change_writes_a_handful_of_trees(sqlite_deployment: Deployment) -> None:
    dep = sqlite_deployment
    dep.add_source("big")
    tree = dep.working_tree("big")
    for d in range(100):
        dino = tree.mkdir(ROOT, f"d{d:02}".encode(), 0o755).ino
        for f in range(100):
            _put(tree, dino, f"f{f:03}".encode(), f"{d}/{f}".encode())
    before = dep.blobs.stats["new_trees"]
    dep.create_snapshot("big", "one")
    assert dep.blobs.stats["new_trees"] - before == 102  # 100 dirs, the root, the top
    before_trees, before_blobs = dep.blobs.stats["new_trees"], dep.blobs.stats["new_blobs"]
    target = tree.resolve(b"d42/f042")
    tree.open(target)
    tree.write(target, 0, b"changed")
    tree.release(target)
    dep.create_snapshot("big", "two")
    assert dep.blobs.stats["new_trees"] - before_trees == 3  # d42, the root, the top
    assert dep.blobs.stats["new_blobs"] - before_blobs == 4  # and one chunk
    changes = [(c.change, c.path) for c in diff(dep.snapshot("big", "one"), dep.snapshot("big", "two"))]
    assert changes == [("modified", b"d42/f042")]
    assert dep.snapshot("big", "one").read(b"d42/f042") == b"42/42"
    assert dep.snapshot("big", "two").read(b"d42/f042") == b"changed"


def test_read_api(deployment: Deployment) -> None:
    dep = deployment
    dep.add_source("h1")
    tree = dep.working_tree("h1")
    d = tree.mkdir(ROOT, b"dir", 0o700).ino
    data = os.urandom(6 << 20)
    _put(tree, d, b"big", data)
    tree.symlink(ROOT, b"link", b"dir/big")
    dep.create_snapshot("h1", "s1")
    tree.unlink(d, b"big")
    view = dep.snapshot("h1", "s1")
    assert [e.name for e in view.listdir()] == [b"dir", b"link"]
    assert view.lookup(b"dir/big").size == len(data)
    assert view.read(b"dir/big", 5 << 20, 100) == data[5 << 20 : (5 << 20) + 100]
    assert view.read(b"/dir/big") == data
    assert view.lookup(b"link").payload == b"dir/big"
    assert [p for p, _ in view.walk()] == [b"dir", b"dir/big", b"link"]
    assert view.root.mode == 0o755
    with pytest.raises(errors.NotFound):
        view.lookup(b"dir/nope")
    with pytest.raises(errors.NotADirectory):
        view.listdir(b"link")


def test_snapshot_names_and_listing(deployment: Deployment) -> None:
    dep = deployment
    dep.add_source("h1")
    a = dep.create_snapshot("h1")
    b = dep.create_snapshot("h1")
    assert a.name != b.name
    with pytest.raises(errors.Exists):
        dep.create_snapshot("h1", a.name)
    with pytest.raises(errors.InvalidName):
        dep.create_snapshot("h1", "a/b")
    assert [s.name for s in dep.list_snapshots("h1")] == [a.name, b.name]
    with pytest.raises(errors.NotEmpty):
        dep.remove_source("h1")
    dep.delete_snapshot("h1", a.name)
    dep.delete_snapshot("h1", b.name)
    dep.remove_source("h1")
    assert dep.list_sources() == []
    with pytest.raises(errors.NotFound):
        dep.list_snapshots("h1")


def test_dedup_across_files_versions_and_sources(sqlite_deployment: Deployment) -> None:
    dep = sqlite_deployment
    data = os.urandom(10 << 20)
    for source in ("h1", "h2"):
        dep.add_source(source)
        tree = dep.working_tree(source)
        _put(tree, ROOT, b"a", data)
        _put(tree, ROOT, b"copy with another name", data)
        dep.create_snapshot(source)
    first = dep.blobs.stats["new_bytes"]
    assert len(data) <= first < len(data) + (64 << 10)
    tree = dep.working_tree("h1")
    edited = data[: 5 << 20] + b"edit" + data[5 << 20 :]
    _put(tree, ROOT, b"v2", edited)
    dep.create_snapshot("h1")
    added = dep.blobs.stats["new_bytes"] - first
    assert added < 3 * (4 << 20)  # at most the chunks around the edit, and trees
    assert dep.snapshot("h2", dep.list_snapshots("h2")[0].name).read(b"copy with another name") == data


def test_a_snapshot_id_is_never_given_out_twice(deployment: Deployment) -> None:
    """Mounts number snapshot nodes by id; SQLite alone would give a deleted highest id to the next row."""
    from sqlalchemy import select

    from engine.catalog.schema import snapshots

    dep = deployment
    dep.add_source("h1")

    def ids() -> dict[str, int]:
        with dep.catalog.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(select(snapshots.c.name, snapshots.c.id))}

    dep.create_snapshot("h1", "a")
    dep.create_snapshot("h1", "b")
    b = ids()["b"]
    dep.delete_snapshot("h1", "b")
    dep.create_snapshot("h1", "b")
    assert ids()["b"] > b
    dep.delete_snapshot("h1", "a")
    dep.delete_snapshot("h1", "b")
    dep.create_snapshot("h1", "c")
    assert ids()["c"] > b + 1
