"""Reading snapshots through the mount's view: read-ahead and prefetch of what comes next."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from engine.content import ContentReader, unpack_extents
from engine.deployment import Deployment
from engine.ids import HOLE
from engine.mount import MountView
from engine.mount.nodes import ROOT
from engine.worktree.tree import ROOT as TREE_ROOT

WAIT = 30.0  # seconds before a background read counts as never done


def eventually(check: Callable[[], bool], within: float = WAIT) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.01)
    return False


def _snapshot_with(dep: Deployment, files: dict[bytes, bytes], dirs: int = 0) -> tuple[MountView, int]:
    """A source with `files` (and `dirs` subdirectories holding one small file each), snapshotted."""
    dep.add_source("h1")
    tree = dep.working_tree("h1")
    for name, data in files.items():
        ino = tree.create(TREE_ROOT, name, 0o644).ino
        tree.open(ino)
        tree.write(ino, 0, data)
        tree.release(ino)
    for i in range(dirs):
        d = tree.mkdir(TREE_ROOT, b"d%d" % i, 0o755).ino
        f = tree.create(d, b"f", 0o644).ino
        tree.open(f)
        tree.write(f, 0, b"file in dir %d" % i)
        tree.release(f)
    dep.create_snapshot("h1", "s1")
    view = MountView(dep)
    source = view.lookup(ROOT, b"h1").ino
    snaps = view.lookup(source, b"snapshots").ino
    return view, view.lookup(snaps, b"s1").ino


def test_ahead_lists_the_next_chunks() -> None:
    a, b, c = b"a" * 32, b"b" * 32, b"c" * 32
    reader = ContentReader(dict(), [(a, 10), (HOLE, 5), (b, 10), (c, 10)])  # type: ignore[arg-type]
    assert reader.ahead(0, 2) == [a, b]  # the hole holds nothing to fetch
    assert reader.ahead(15, 1) == [b, c]
    assert reader.ahead(34, 3) == [c]


def test_sequential_read_fetches_the_next_chunk_ahead(deployment: Deployment) -> None:
    data = os.urandom(12 << 20)
    view, snap = _snapshot_with(deployment, {b"big": data})
    deployment.blobs.cache.clear()
    entry = view.lookup(snap, b"big")
    chunks = [i for i, _ in unpack_extents(view._entry(entry.ino).payload)]
    assert len(chunks) >= 3
    assert view.read(entry.ino, 0, 128 << 10) == data[: 128 << 10]
    # The next chunks arrive without being asked for.
    assert eventually(lambda: all(deployment.blobs.cache.contains(i) for i in chunks[1:3]))
    pos, out = 0, bytearray()
    while pos < len(data):
        out += view.read(entry.ino, pos, 128 << 10)
        pos += 128 << 10
    assert out == data


def test_listing_prefetches_subdirectories_and_small_files(deployment: Deployment) -> None:
    view, snap = _snapshot_with(deployment, {b"small": b"x" * 1000}, dirs=5)
    deployment.blobs.cache.clear()
    deployment.trees.clear()
    names = [name for name, _ in view.listdir(snap)]
    assert names == [b"d0", b"d1", b"d2", b"d3", b"d4", b"small"]
    small = view.lookup(snap, b"small")
    small_chunks = [i for i, _ in unpack_extents(view._entry(small.ino).payload)]
    assert eventually(lambda: all(deployment.blobs.cache.contains(i) for i in small_chunks))
    tree_ids = [view._entry(view.lookup(snap, b"d%d" % i).ino).payload for i in range(5)]
    assert eventually(lambda: all(deployment.trees.holds(t) for t in tree_ids))
    for i in range(5):
        d = view.lookup(snap, b"d%d" % i).ino
        f = view.lookup(d, b"f").ino
        assert view.read(f, 0, 100) == b"file in dir %d" % i


def test_small_contents_of_a_listing(deployment: Deployment) -> None:
    files = {b"a": b"first", b"b": os.urandom(3000), b"big": os.urandom(3 << 20), b"empty": b""}
    view, snap = _snapshot_with(deployment, files, dirs=1)
    view.listdir(snap)
    got = {number: content for number, content in view.small_contents(snap)}
    # One-chunk files only, by their node numbers: what FUSE may put in the page cache.
    assert got == {view.lookup(snap, b"a").ino: b"first", view.lookup(snap, b"b").ino: files[b"b"]}
    assert list(view.small_contents(ROOT)) == []


def test_listing_a_directory_prefetches_the_next_ones_files(deployment: Deployment) -> None:
    view, snap = _snapshot_with(deployment, {}, dirs=3)
    view.listdir(snap)
    d0, d1 = view.lookup(snap, b"d0").ino, view.lookup(snap, b"d1").ino
    tree_ids = [view._entry(d).payload for d in (d0, d1)]
    assert eventually(lambda: all(deployment.trees.holds(t) for t in tree_ids))
    f1 = deployment.trees.get(tree_ids[1])[b"f"]
    deployment.blobs.cache.clear()
    view.listdir(d0)
    assert eventually(lambda: deployment.blobs.cache.contains(f1.payload[:32]))
