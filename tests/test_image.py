"""The image pool without a mount: block maps, writable disks, push, versions, garbage collection, bad input."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from engine.deployment import Deployment
from engine.errors import InvalidArgument, InvalidName, NoSpace, NotFound
from engine.gc import collect
from engine.ids import HOLE
from image.blockmap import BlockMap
from image.disk import DIRTY_MAX, MAX_SIZE
from image.pool import ImagePool
from image.push import push

MiB = 1 << 20


def scattered(path: Path, size: int, writes: int, seed: int) -> bytes:
    """A sparse file with random data at random offsets."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for _ in range(writes):
            f.seek(rng.randrange(size))
            f.write(rng.randbytes(rng.randrange(1, 200_000)))
        f.truncate(size)
    return path.read_bytes()


class MemBlobs:
    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}

    def put(self, data: bytes, kind: int = 0) -> bytes:
        blob_id = random.Random(data).randbytes(32)
        self.blobs[blob_id] = bytes(data)
        return blob_id

    def get(self, blob_id: bytes) -> bytes:
        return self.blobs[blob_id]


@pytest.mark.parametrize("max_nodes", [1024, 3])
def test_block_map_matches_a_dict_through_resizes_and_commits(max_nodes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("image.blockmap.MAX_NODES", max_nodes)  # 3: nodes are dropped and read again
    rng = random.Random(7)
    store = MemBlobs()
    m, ref, n = BlockMap(store, HOLE, 0), {}, 0
    for step in range(400):
        op = rng.random()
        if op < 0.1:
            n = rng.choice([0, 5, 1023, 1024, 1025, 3000, 2_000_000, rng.randrange(5000)])
            m.resize(n)
            ref = {k: v for k, v in ref.items() if k < n}
        elif op < 0.7 and n:
            block, value = rng.randrange(n), rng.choice([HOLE, rng.randbytes(32)])
            m.set(block, value)
            ref[block] = value
        elif op < 0.8:
            m = BlockMap(store, m.commit(), m.blocks)
        for block in [*list(ref)[:20], rng.randrange(max(n, 1))]:
            assert m.get(block) == ref.get(block, HOLE), (step, block)
    assert sorted(m.stored(0, n)) == sorted(b for b, v in ref.items() if v != HOLE)


def test_push_stores_only_changed_blocks_and_versions_stay(pool: ImagePool, tmp_path: Path) -> None:
    dep = pool.dep
    img = tmp_path / "disk.raw"
    first = scattered(img, 40 * MiB + 123, 40, seed=1)  # an odd size: not a block multiple
    stats = push(pool, "h1", "vm", img)
    assert stats.read_bytes < len(first) // 2  # the holes were skipped, not read
    dep.create_snapshot("h1", "one")

    rng = random.Random(2)
    with open(img, "r+b") as f:
        for _ in range(10):  # ten 4 KiB writes: at most ten 64 KiB blocks change
            f.seek(rng.randrange(len(first) - 4096))
            f.write(rng.randbytes(4096))
    second = img.read_bytes()
    stats = push(pool, "h1", "vm", img)
    assert 1 <= stats.changed_blocks <= 20
    # Blocks and the few map nodes on their paths: far below the image, near the changed blocks.
    assert stats.new_bytes <= stats.changed_blocks * pool.block_size + 4 * 32 * 1024
    dep.create_snapshot("h1", "two")

    one = pool.reader(pool.version("h1", "vm", "one"))
    two = pool.reader(pool.version("h1", "vm", "two"))
    assert one.read(0, 1 << 30) == first and two.read(0, 1 << 30) == second
    for _ in range(50):
        offset, size = rng.randrange(len(first) + 10), rng.randrange(300_000)
        assert one.read(offset, size) == first[offset : offset + size]

    unchanged = push(pool, "h1", "vm", img)
    assert unchanged.changed_blocks == 0 and unchanged.new_bytes == 0


def test_random_writes_truncates_and_snapshots(pool: ImagePool) -> None:
    info = pool.create("h1", "vm", 3 * MiB)
    disk = pool.open_disk(info)
    rng = random.Random(3)
    ref = bytearray(3 * MiB)
    for _ in range(DIRTY_MAX * 2):  # enough partial blocks to spill the oldest
        offset, data = rng.randrange(len(ref) + 100_000), rng.randbytes(rng.randrange(1, 70_000))
        disk.write(offset, data)
        ref.extend(bytes(max(0, offset + len(data) - len(ref))))  # past the end: the image grows
        ref[offset : offset + len(data)] = data
    assert disk.size == len(ref) and disk.read(0, 1 << 30) == ref
    disk.truncate(1_234_567)  # shrink to an odd size, then grow: the tail reads zeros
    disk.truncate(2 * MiB)
    ref = ref[:1_234_567] + bytes(2 * MiB - 1_234_567)
    assert disk.read(0, 1 << 30) == ref
    pool.dep.create_snapshot("h1", "s")
    disk.write(0, b"later")  # after the snapshot: the version does not change
    version = pool.reader(pool.version("h1", "vm", "s"))
    assert version.size == 2 * MiB and version.read(0, 1 << 30) == ref


def test_sparse_terabytes(pool: ImagePool, tmp_path: Path) -> None:
    img = tmp_path / "huge.raw"
    with open(img, "wb") as f:
        f.truncate(2 << 40)
        for offset in (0, 1 << 40, (2 << 40) - 4096):
            f.seek(offset)
            f.write(b"x" * 4096)
    stats = push(pool, "h1", "big", img)
    assert stats.read_bytes <= 3 * pool.block_size and stats.changed_blocks == 3
    assert stats.new_bytes < 2 * MiB  # three blocks and the map nodes on their paths
    pool.dep.create_snapshot("h1", "s")
    reader = pool.reader(pool.version("h1", "big", "s"))
    assert reader.size == 2 << 40
    assert reader.read((1 << 40) - 10, 20) == bytes(10) + b"x" * 10
    assert reader.read((2 << 40) - 4097, 4097) == b"\0" + b"x" * 4096
    assert reader.read(123 << 30, 4096) == bytes(4096)


def test_a_device_that_shrinks_between_versions(pool: ImagePool, tmp_path: Path) -> None:
    img = tmp_path / "dev.raw"
    big = scattered(img, 9 * MiB, 20, seed=4)
    push(pool, "h1", "vm", img)
    pool.dep.create_snapshot("h1", "big")
    os.truncate(img, 5 * MiB + 7)
    push(pool, "h1", "vm", img)
    pool.dep.create_snapshot("h1", "small")
    assert pool.reader(pool.version("h1", "vm", "small")).read(0, 1 << 30) == big[: 5 * MiB + 7]
    assert pool.reader(pool.version("h1", "vm", "big")).read(0, 1 << 30) == big


def test_bad_input_gets_clear_errors(pool: ImagePool, tmp_path: Path) -> None:
    disk = pool.open_disk(pool.create("h1", "vm", MiB))
    with pytest.raises(NoSpace):
        disk.write(MAX_SIZE - 2, b"abc")
    with pytest.raises(InvalidArgument):
        disk.write(-1, b"x")
    with pytest.raises(InvalidArgument):
        disk.truncate(-5)
    with pytest.raises(InvalidName):
        pool.create("h1", "a@b")
    with pytest.raises(NotFound):
        push(pool, "h1", "vm", tmp_path / "missing")
    with pytest.raises(InvalidArgument):
        push(pool, "h1", "vm", tmp_path)  # a directory is not an image
    assert disk.size == MiB and disk.read(0, MiB) == bytes(MiB)


def test_a_failed_push_leaves_the_image_as_it_was(pool: ImagePool, tmp_path: Path) -> None:
    img = tmp_path / "disk.raw"
    good = scattered(img, 4 * MiB, 10, seed=5)
    push(pool, "h1", "vm", img)

    class Broken(Exception):
        pass

    def fail(_stats: object) -> None:
        raise Broken  # as a read error half-way through would

    img.write_bytes(os.urandom(4 * MiB))
    with pytest.raises(Broken):
        push(pool, "h1", "vm", img, progress=fail)
    pool.dep.create_snapshot("h1", "after")
    assert pool.reader(pool.version("h1", "vm", "after")).read(0, 1 << 30) == good


def test_gc_keeps_image_versions_and_frees_dropped_ones(pool: ImagePool, tmp_path: Path) -> None:
    dep = pool.dep
    img = tmp_path / "disk.raw"
    first = scattered(img, 8 * MiB, 20, seed=6)
    push(pool, "h1", "vm", img)
    dep.create_snapshot("h1", "one")
    img.write_bytes(os.urandom(8 * MiB))  # every block changes
    push(pool, "h1", "vm", img)
    dep.create_snapshot("h1", "two")
    report = collect(dep)
    assert report.dead_blobs == 0
    one = pool.reader(pool.version("h1", "vm", "one"))
    assert one.read(0, 1 << 30) == first
    own = one.stored_blocks()
    assert own > 10
    dep.delete_snapshot("h1", "one")
    report = collect(dep)
    assert report.dead_blobs == own + 1  # its blocks and its one map node
    pool.dep.blobs.cache.clear()
    assert pool.reader(pool.version("h1", "vm", "two")).read(0, 1 << 30) == img.read_bytes()


def test_removing_an_image_keeps_its_versions(pool: ImagePool, tmp_path: Path) -> None:
    img = tmp_path / "disk.raw"
    data = scattered(img, 2 * MiB, 5, seed=8)
    push(pool, "h1", "vm", img)
    pool.dep.create_snapshot("h1", "s")
    pool.remove("h1", "vm")
    assert pool.images("h1") == []
    assert pool.reader(pool.version("h1", "vm", "s")).read(0, 1 << 30) == data


def test_catalog_rebuild_brings_images_back(tmp_path: Path) -> None:
    from engine.catalog import open_catalog
    from engine.rebuild import rebuild
    from engine.storage import open_backend

    data = tmp_path / "data"
    img = tmp_path / "disk.raw"
    first = scattered(img, 8 * MiB + 5, 20, seed=3)
    with Deployment.open(data) as dep:
        dep.add_source("h1")
        pool = ImagePool(dep)
        push(pool, "h1", "vm", img)
        dep.create_snapshot("h1", "one")
        pool.close()
    for suffix in ("", "-wal", "-shm"):
        (data / f"catalog.db{suffix}").unlink(missing_ok=True)
    config = {"kind": "local", "path": str(data / "pool")}
    catalog = open_catalog(f"sqlite:///{data / 'catalog.db'}")
    try:
        report = rebuild(catalog, open_backend(config), config)
    finally:
        catalog.dispose()
    assert report.problems == [] and report.snapshots == 1
    with Deployment.open(data) as dep:
        pool = ImagePool(dep)
        try:
            assert pool.reader(pool.version("h1", "vm", "one")).read(0, 1 << 30) == first
            assert [i.name for i in pool.images("h1")] == ["vm"]  # the writable image, as the snapshot left it
            assert collect(dep).dead_blobs == 0  # everything the image uses is marked again
        finally:
            pool.close()
