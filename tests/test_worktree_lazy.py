"""A working tree keeps in memory only the directories in use: what it lets go of loads again, unchanged."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from engine import backup as backup_module
from engine import errors
from engine.backup import backup
from engine.catalog.schema import inodes
from engine.deployment import Deployment
from engine.reader import SnapshotView, TreeCache, diff
from engine.worktree.tree import ROOT, WorkingTree
from engine.worktrees import INODE_BYTES
from tests.trees import make_tree


def _forget(tree: WorkingTree) -> None:
    tree.commit()
    tree.trim(0)


def test_a_backup_bounded_by_the_budget_equals_one_held_in_memory(deployment: Deployment, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    for i in range(40):
        d = src / "many" / f"d{i:02}"
        d.mkdir(parents=True)
        for j in range(25):
            (d / f"f{j}").write_bytes(b"%d/%d" % (i, j))
    deployment.add_source("whole")
    deployment.add_source("lean")
    whole, lean = deployment.working_tree("whole"), deployment.working_tree("lean")
    lean.keep = 60
    most = 0

    def watch(_stats: object) -> None:
        nonlocal most
        most = max(most, lean.loaded)

    for step in range(3):
        backup(whole, deployment.blobs, src)
        backup(lean, deployment.blobs, src, watch)
        _forget(lean)  # the snapshot reads the directories it does not hold from their rows
        a, b = deployment.create_snapshot("whole"), deployment.create_snapshot("lean")
        # Equal but for directories' atimes (the first walk's scandir moves them).
        trees = TreeCache(deployment.blobs)
        assert list(diff(SnapshotView(trees, a.root), SnapshotView(trees, b.root))) == []
        assert (a.files, a.bytes) == (b.files, b.bytes)
        assert whole.loaded > 1000 and most < 300  # a directory's entries at most, beyond the budget
        if step == 2:
            break
        # Changes everywhere: removed, added, renamed, rewritten, a hard link broken.
        shutil.rmtree(src / "many" / f"d{step:02}")
        (src / "many" / "d30" / f"new{step}").write_bytes(b"new")
        os.rename(src / "many" / f"d{31 + step}", src / "many" / f"moved{step}")
        (src / "many" / "d35" / "f0").write_bytes(b"rewritten %d" % step)
        link = src / ("hard-b", "odd/hard-c")[step]
        link.unlink()
        link.write_bytes(b"no longer a link")


def test_names_and_hard_links_work_on_what_was_let_go_of(tree: WorkingTree) -> None:
    a = tree.mkdir(ROOT, b"a", 0o755).ino
    b = tree.mkdir(ROOT, b"b", 0o755).ino
    f = tree.create(a, b"f", 0o644).ino
    _forget(tree)
    assert tree.loaded == 1  # the root alone
    # Asked for by number (as the kernel does), it loads with the directories above it.
    tree.setattr(f, mode=0o600)
    assert tree.loaded == 3 and tree.path(f) == b"a/f"
    tree.link(f, b, b"g")
    tree.mkdir(b, b"full", 0o755)
    _forget(tree)
    assert tree.loaded == 1
    tree.rename(a, b"f", b, b"h")
    _forget(tree)
    with pytest.raises(errors.NotEmpty):
        tree.rmdir(ROOT, b"b")
    with pytest.raises(errors.Exists):
        tree.mkdir(b, b"full", 0o755)
    _forget(tree)
    assert tree.names(b) == [b"full", b"g", b"h"]
    assert tree.stat(tree.lookup(b, b"g").ino).nlink == 2
    tree.unlink(b, b"g")
    _forget(tree)
    assert tree.stat(f).nlink == 1 and tree.stat(f).mode & 0o777 == 0o600
    assert tree.names(a) == []
    _forget(tree)
    assert tree.loaded == 1


def test_a_snapshot_sees_a_change_to_a_hard_link_under_every_name(deployment: Deployment) -> None:
    deployment.add_source("h")
    tree = deployment.working_tree("h")
    a = tree.mkdir(ROOT, b"a", 0o755).ino
    b = tree.mkdir(ROOT, b"b", 0o755).ino
    f = tree.create(a, b"f", 0o644).ino
    tree.link(f, b, b"g")
    deployment.create_snapshot("h", "one")
    _forget(tree)
    tree.setattr(f, mode=0o640)  # loads a (or b) by number; both trees above the file go stale
    _forget(tree)
    info = deployment.create_snapshot("h", "two")
    view = SnapshotView(TreeCache(deployment.blobs), info.root)
    assert view.lookup(b"a/f").mode & 0o777 == 0o640
    assert view.lookup(b"b/g").mode & 0o777 == 0o640


def test_pending_rows_are_cleared_without_holding_the_files(deployment: Deployment) -> None:
    deployment.add_source("h")
    tree = deployment.working_tree("h")
    d = tree.mkdir(ROOT, b"d", 0o755).ino
    for i in range(20):
        f = tree.create(d, b"f%d" % i, 0o644).ino
        tree.set_content(f, [(deployment.blobs.put(os.urandom(100 + i)), 100 + i)])
    _forget(tree)
    assert tree.loaded == 1

    def pending() -> int:
        with deployment.catalog.engine.connect() as conn:
            query = select(inodes.c.ino).where(inodes.c.source_id == tree.source_id, inodes.c.pending)
            return len(conn.execute(query).all())

    assert pending() >= 20  # the chunks are queued, not stored
    deployment.flush()
    tree.commit()
    assert pending() == 0 and tree.loaded == 1


def test_a_missing_inode_number_is_not_found(tree: WorkingTree) -> None:
    with pytest.raises(errors.NotFound):
        tree.stat(999)
    with pytest.raises(errors.NotADirectory):
        tree.listdir(tree.create(ROOT, b"f", 0o644).ino)


@pytest.fixture
def tree(deployment: Deployment) -> WorkingTree:
    deployment.add_source("h1")
    return deployment.working_tree("h1")


def test_the_trees_of_a_process_share_one_budget(deployment: Deployment) -> None:
    deployment.worktrees.cache_bytes = 1000 * INODE_BYTES  # 1,000 inodes (the least a budget holds)
    trees = []
    for name in ("a", "b"):
        deployment.add_source(name)
        tree = deployment.working_tree(name)
        for i in range(8):
            d = tree.mkdir(ROOT, b"d%d" % i, 0o755).ino
            for j in range(100):
                tree.create(d, b"f%d" % j, 0o644)
        trees.append(tree)
    deployment.commit()
    assert sum(t.loaded for t in trees) > 1600
    deployment.worktrees.trim()
    assert sum(t.loaded for t in trees) <= 1000
    assert len(trees[1].listdir(trees[1].lookup(ROOT, b"d7").ino)) == 100  # what went loads again


def test_a_preload_joins_what_is_in_memory(deployment: Deployment) -> None:
    deployment.add_source("h")
    tree = deployment.working_tree("h")
    a = tree.mkdir(ROOT, b"a", 0o755).ino
    tree.mkdir(a, b"empty", 0o755)
    f = tree.create(a, b"f", 0o644).ino
    tree.link(f, ROOT, b"g")
    _forget(tree)
    tree.setattr(f, mode=0o600)  # loaded by number, changed, not committed
    tree.keep = 3
    assert not tree.preload() and tree.loaded < 6  # too big for the budget: nothing more loads
    tree.keep = 100
    assert tree.preload() and tree.loaded == 4
    assert tree.names(ROOT) == [b"a", b"g"] and tree.names(a) == [b"empty", b"f"]
    assert tree.stat(tree.lookup(ROOT, b"g").ino).mode & 0o777 == 0o600
    tree.unlink(a, b"f")
    assert tree.stat(f).nlink == 1 and tree.path(f) == b"g"
    _forget(tree)
    assert tree.loaded == 1


def test_a_backup_commits_as_it_walks(deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit builds all its rows at once: a walk does not leave more than COMMIT_ROWS (and a directory) to it."""
    monkeypatch.setattr(backup_module, "COMMIT_ROWS", 30)
    src = tmp_path / "src"
    for i in range(12):
        (src / f"d{i}").mkdir(parents=True)
        for j in range(10):
            (src / f"d{i}" / f"f{j}").write_bytes(b"%d.%d" % (i, j))
    deployment.add_source("s")
    tree = deployment.working_tree("s")
    most = 0

    def watch(_stats: object) -> None:
        nonlocal most
        most = max(most, len(tree.dirty))

    backup(tree, deployment.blobs, src, watch)
    assert 0 < most <= 30 + 11
    snap = deployment.create_snapshot("s")
    view = SnapshotView(TreeCache(deployment.blobs), snap.root)
    assert snap.files == 120 and view.read(b"d7/f3") == b"7.3"
