"""The working tree's lock is never held across work on a file's bytes.

The FUSE loop takes the tree's lock inline, so a release that chunks a large
spool, or a snapshot of a file still being written, must leave every other
file of the source usable meanwhile.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.cache import WouldBlock, memory_only
from engine.deployment import Deployment
from engine.packs import DATA
from engine.worktree import WorkingTree
from engine.worktree.freeze import freeze
from engine.worktree.tree import ROOT

WAIT = 30.0  # seconds before a stuck thread counts as a deadlock


class GatedPuts:
    """The tree's blob store; once `hold()` is called, puts wait at a gate until it opens."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.holding = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    def hold(self) -> GatedPuts:
        self.holding = True
        return self

    def put(self, data: bytes, kind: int = DATA) -> bytes:
        if self.holding:
            self.entered.set()
            assert self.gate.wait(WAIT), "gate never opened"
        return bytes(self.inner.put(data, kind))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def tree(deployment: Deployment) -> Iterator[WorkingTree]:
    deployment.add_source("h1")
    tree = deployment.working_tree("h1")
    gated = GatedPuts(tree.blobs)
    tree.blobs = gated  # type: ignore[assignment]
    yield tree
    gated.gate.set()
    tree.blobs = gated.inner


def _gate(tree: WorkingTree) -> GatedPuts:
    assert isinstance(tree.blobs, GatedPuts)
    return tree.blobs.hold()


def _spooled(tree: WorkingTree, name: bytes, data: bytes) -> int:
    """An open file written out of order, so its bytes sit in a spool file on disk."""
    ino = tree.create(ROOT, name, 0o644).ino
    tree.open(ino)
    half = len(data) // 2
    tree.write(ino, half, data[half:])
    tree.write(ino, 0, data[:half])
    return ino


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # reported by the test
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def test_other_files_stay_usable_while_a_release_chunks(tree: WorkingTree) -> None:
    data = os.urandom(3 << 20)
    ino = _spooled(tree, b"big", data)
    gated = _gate(tree)
    releasing, release_errors = _in_thread(lambda: tree.release(ino))
    assert gated.entered.wait(WAIT)  # the release is chunking, its puts held

    def meanwhile() -> None:
        token = memory_only.set(True)  # as the FUSE loop calls: nothing may wait
        try:
            assert tree.lookup(ROOT, b"big").size == len(data)
            assert [n for n, _ in tree.listdir(ROOT)] == [b"big"]
            other = tree.mkdir(ROOT, b"dir", 0o755).ino
            tree.setattr(other, mode=0o700)
            with pytest.raises(WouldBlock):
                tree.read(ino, 0, 10)  # the file being finished: a worker thread waits for it
            with pytest.raises(WouldBlock):
                tree.write(ino, 0, b"x")
        finally:
            memory_only.reset(token)

    checker, errors = _in_thread(meanwhile)
    checker.join(WAIT)
    assert not checker.is_alive(), "the tree's lock was held while the release chunked"
    assert not errors, errors
    # A write in a thread waits for the release to finish, then lands on the new content.
    tree.open(ino)
    writer, write_errors = _in_thread(lambda: tree.write(ino, 0, b"NEW"))
    gated.gate.set()
    for t in (releasing, writer):
        t.join(WAIT)
        assert not t.is_alive()
    assert not release_errors and not write_errors
    tree.release(ino)
    assert tree.read(ino, 0, len(data)) == b"NEW" + data[3:]


def test_snapshot_of_an_open_file_chunks_outside_the_lock(deployment: Deployment, tree: WorkingTree) -> None:
    data = os.urandom(2 << 20)
    ino = _spooled(tree, b"open", data)
    gated = _gate(tree)
    frozen: list[Any] = []
    freezing, errors = _in_thread(lambda: frozen.append(freeze(tree)))
    assert gated.entered.wait(WAIT)
    checker, check_errors = _in_thread(lambda: tree.mkdir(ROOT, b"during", 0o755))
    checker.join(WAIT)
    assert not checker.is_alive(), "the tree's lock was held while a snapshot chunked an open file"
    gated.gate.set()
    freezing.join(WAIT)
    assert not errors and not check_errors and frozen
    tree.release(ino)
    assert tree.read(ino, 0, len(data)) == data


def test_unlink_while_a_release_chunks(tree: WorkingTree) -> None:
    ino = _spooled(tree, b"gone", os.urandom(2 << 20))
    gated = _gate(tree)
    releasing, errors = _in_thread(lambda: tree.release(ino))
    assert gated.entered.wait(WAIT)
    tree.unlink(ROOT, b"gone")
    gated.gate.set()
    releasing.join(WAIT)
    assert not releasing.is_alive() and not errors
    assert tree.listdir(ROOT) == []
    assert ino not in tree.inodes
