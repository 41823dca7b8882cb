"""A running appliance lets go of a source nothing changes: the CLI works beside it; a change loads it again."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from engine.deployment import Deployment
from engine.errors import InUse, Unloaded
from engine.worktree import WorkingTree
from engine.worktree.inode import ROOT

from .test_mount import CAIRN, Mounted


def _names(tree: WorkingTree) -> set[bytes]:
    return {name for name, _ in tree.listdir(ROOT)}


def test_an_idle_working_tree_is_let_go_and_the_next_change_loads_it_again(data_dir: Path) -> None:
    with Deployment.open(data_dir) as a:
        a.add_source("h1")
        a.worktrees.tree_idle = 0.3
        old = a.working_tree("h1")
        old.mkdir(ROOT, b"from-a", 0o755)
        assert a.worktrees.let_go_idle() == []  # just changed
        time.sleep(0.4)
        with Deployment.open(data_dir) as b:
            with pytest.raises(InUse, match="being written"):
                b.working_tree("h1")  # idle, but not yet let go of
            assert a.worktrees.let_go_idle() == ["h1"]
            tree = b.working_tree("h1")  # the other process takes the lease, and sees what `a` committed
            assert _names(tree) == {b"from-a"}
            tree.mkdir(ROOT, b"from-b", 0o755)
        with pytest.raises(Unloaded):  # a change cannot land in the tree let go of: it would be lost
            old.mkdir(ROOT, b"late", 0o755)
        assert _names(a.working_tree("h1")) == {b"from-a", b"from-b"}  # loaded again, leased again


def test_an_open_file_keeps_the_tree_and_its_lease(data_dir: Path) -> None:
    with Deployment.open(data_dir) as a:
        a.add_source("h1")
        a.worktrees.tree_idle = 0.2
        tree = a.working_tree("h1")
        ino = tree.create(ROOT, b"f", 0o644).ino
        tree.open(ino)
        time.sleep(0.3)
        assert a.worktrees.let_go_idle() == []
        tree.release(ino)
        time.sleep(0.3)
        assert a.worktrees.let_go_idle() == ["h1"]


def test_a_cli_process_waits_for_the_lease_and_says_so(data_dir: Path) -> None:
    with Deployment.open(data_dir) as a:
        a.add_source("h1")
        a.worktrees.tree_idle = 1.0
        a.working_tree("h1").mkdir(ROOT, b"d", 0o755)
        a.start_flusher()  # lets go of idle trees as it commits
        with Deployment.open(data_dir) as b:
            told: list[str] = []
            b.worktrees.lease_wait, b.worktrees.on_lease_wait = 20.0, told.append
            t0 = time.monotonic()
            tree = b.working_tree("h1")
            assert 0.3 < time.monotonic() - t0 < 20
            assert _names(tree) == {b"d"}
            assert len(told) == 1 and "being written by" in told[0] and "waiting up to 20 s" in told[0]
            b.worktrees.lease_wait = 0.0
        with Deployment.open(data_dir) as c:
            c.worktrees.lease_wait = 1.0
            c.working_tree("h1")  # free: no wait, nothing said
            with pytest.raises(InUse):
                a.working_tree("h1")  # a long-running process never waits: EBUSY at once


def test_backup_and_gc_from_the_cli_beside_a_running_mount(tmp_path: Path) -> None:
    data, src = tmp_path / "data", tmp_path / "src"
    src.mkdir()
    (src / "from-cli").write_bytes(b"x" * 5000)
    subprocess.run([*CAIRN, "--data", str(data), "config", "set", "tree_idle", "1"], check=True, capture_output=True)
    m = Mounted(data, tmp_path / "mnt", tmp_path / "mount.log")
    m.path.mkdir()
    m.start()
    try:
        os.mkdir(m.path / "h1")
        (m.path / "h1" / "current" / "from-mount").write_bytes(b"y" * 5000)
        done = subprocess.run([*CAIRN, "--data", str(data), "backup", "h1", str(src), "--snapshot", "cli"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "waiting: source 'h1' is being written by" in done.stderr
        gc = subprocess.run([*CAIRN, "--data", str(data), "pool", "gc"], capture_output=True, text=True, timeout=60)
        assert gc.returncode == 0, gc.stderr
        deadline = time.monotonic() + 10  # the kernel keeps the listing for a second
        while sorted(os.listdir(m.path / "h1" / "current")) != ["from-cli"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(os.listdir(m.path / "h1" / "current")) == ["from-cli"]  # what the backup left
        (m.path / "h1" / "current" / "after").write_bytes(b"z")  # the mount loads the tree again, leased
        assert (m.path / "h1" / "snapshots" / "cli" / "from-cli").read_bytes() == b"x" * 5000
        refused = subprocess.run([*CAIRN, "--data", str(data), "--wait", "0", "backup", "h1", str(src)],
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
        assert refused.returncode != 0 and "being written by" in refused.stderr  # --wait 0: at once
    finally:
        m.stop()
        subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)
    m.assert_clean_log()


def test_a_small_blob_put_alone_is_stored_once_it_waited(data_dir: Path) -> None:
    with Deployment.open(data_dir) as dep:
        blob_id = dep.blobs.put(b"a small file, written alone")  # below the encoders' batch size
        dep.blobs.flush_if_older(3600)
        assert not dep.blobs.is_stored(blob_id)
        time.sleep(0.2)
        dep.blobs.flush_if_older(0.1)  # what the background commit does every half second, with 5 s
        assert dep.blobs.is_stored(blob_id)
