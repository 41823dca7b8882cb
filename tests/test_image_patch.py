"""Block patches: changed blocks stored as the pages that differ from a full block, read back, chained, collected."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from engine.blockpatch import PAGE, apply_patch, decode_patch, make_patch
from engine.check import check_pool
from engine.deployment import Deployment
from engine.errors import CorruptBlob
from engine.gc import collect
from engine.packs import PATCH
from image.disk import VersionReader
from image.pool import ImagePool
from image.push import push

MiB = 1 << 20
BS = 64 << 10


def patch_of(pool: ImagePool, reader: VersionReader, block: int) -> tuple[bytes, bytes | None]:
    """A block's map entry and, if it is a patch, the patch's base."""
    entry = reader.map.get(block)
    blob = pool.blobs.get(entry)
    return entry, None if len(blob) == reader.block_size else decode_patch(blob, entry).base


def write_pages(path: Path, pages: list[int], seed: int) -> bytes:
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        for page in pages:
            f.seek(page * PAGE)
            f.write(rng.randbytes(PAGE))
    return path.read_bytes()


def test_patch_format_round_trips_and_refuses_what_does_not_fit() -> None:
    rng = random.Random(1)
    base = rng.randbytes(BS)
    data = bytearray(base)
    data[5 * PAGE : 5 * PAGE + 10] = b"x" * 10
    data[15 * PAGE :] = rng.randbytes(PAGE)
    patch = make_patch(b"b" * 32, base, b"n" * 32, bytes(data))
    assert patch is not None and len(patch) < 3 * PAGE
    decoded = decode_patch(patch)
    assert decoded.base == b"b" * 32 and decoded.block == b"n" * 32 and decoded.changed == [5, 15]
    assert apply_patch(decoded, base) == data
    assert make_patch(b"b" * 32, base, b"n" * 32, base) is None  # nothing differs
    assert make_patch(b"b" * 32, base, b"n" * 32, rng.randbytes(BS)) is None  # more than half differs
    with pytest.raises(CorruptBlob):
        decode_patch(patch[:-1])
    with pytest.raises(CorruptBlob):
        apply_patch(decoded, base[:-PAGE])


def test_push_stores_a_few_changed_pages_as_a_chain_of_patches_on_one_base(pool: ImagePool, tmp_path: Path) -> None:
    dep = pool.dep
    img = tmp_path / "disk.raw"
    img.write_bytes(random.Random(2).randbytes(4 * MiB))
    first = img.read_bytes()
    push(pool, "h1", "vm", img)
    dep.create_snapshot("h1", "v1")
    second = write_pages(img, [16 * 3 + 1, 16 * 3 + 9, 16 * 40], seed=3)  # blocks 3 and 40
    stats = push(pool, "h1", "vm", img)
    assert stats.changed_blocks == 2 and stats.new_bytes < 4 * PAGE + 4096  # three pages and a map node
    dep.create_snapshot("h1", "v2")
    third = write_pages(img, [16 * 3 + 2], seed=4)  # block 3 again: a patch of the patch's base
    push(pool, "h1", "vm", img)
    dep.create_snapshot("h1", "v3")

    v1, v2, v3 = (pool.reader(pool.version("h1", "vm", v)) for v in ("v1", "v2", "v3"))
    assert patch_of(pool, v1, 3)[1] is None
    full = v1.map.get(3)
    entry2, base2 = patch_of(pool, v2, 3)
    entry3, base3 = patch_of(pool, v3, 3)
    assert base2 == full and base3 == full and entry3 != entry2
    assert decode_patch(pool.blobs.get(entry3)).changed == [1, 2, 9]  # against the base, not against v2
    assert patch_of(pool, v3, 40) == patch_of(pool, v2, 40)  # unchanged since v2: the same patch
    for reader, want in ((v1, first), (v2, second), (v3, third)):
        assert reader.read(0, 1 << 30) == want
        assert reader.read(3 * BS + PAGE - 5, 2 * PAGE) == want[3 * BS + PAGE - 5 : 3 * BS + 3 * PAGE - 5]

    again = push(pool, "h1", "vm", img)  # a patch's block id says its bytes did not change
    assert again.changed_blocks == 0 and again.new_bytes == 0


def test_more_than_half_the_pages_changed_stores_the_full_block(pool: ImagePool, tmp_path: Path) -> None:
    img = tmp_path / "disk.raw"
    img.write_bytes(random.Random(5).randbytes(MiB))
    push(pool, "h1", "vm", img)
    write_pages(img, list(range(16, 16 + 9)), seed=6)  # 9 of block 1's 16 pages
    push(pool, "h1", "vm", img)
    info = pool.find("h1", "vm")
    assert patch_of(pool, pool.reader(info), 1)[1] is None


def test_gc_keeps_the_bases_of_live_patches(pool: ImagePool, tmp_path: Path) -> None:
    dep = pool.dep
    img = tmp_path / "disk.raw"
    img.write_bytes(random.Random(7).randbytes(2 * MiB))
    push(pool, "h1", "vm", img)
    dep.create_snapshot("h1", "v1")
    want = {"v2": write_pages(img, [0, 16 * 5 + 3], seed=8)}
    push(pool, "h1", "vm", img)
    dep.create_snapshot("h1", "v2")
    want["v3"] = write_pages(img, [1, 16 * 7], seed=9)
    push(pool, "h1", "vm", img)
    dep.create_snapshot("h1", "v3")
    img.write_bytes(os.urandom(2 * MiB))  # the writable image moves on: every block whole and new
    push(pool, "h1", "vm", img)

    dep.delete_snapshot("h1", "v1")
    report = collect(dep, repack_below=1.0)  # sweep every pack that holds a dead blob
    assert report.dead_blobs == 1  # only v1's map node: its blocks are v2's and v3's bases
    dep.delete_snapshot("h1", "v2")
    report = collect(dep, repack_below=1.0)  # sweep every pack that holds a dead blob
    assert report.dead_blobs == 2  # v2's map node and its patch of block 0, which v3 patched again
    dep.blobs.cache.clear()
    assert pool.reader(pool.version("h1", "vm", "v3")).read(0, 1 << 30) == want["v3"]
    assert check_pool(dep.blobs).ok
    dep.delete_snapshot("h1", "v3")
    report = collect(dep, repack_below=1.0)  # sweep every pack that holds a dead blob
    # v1's blocks (v3's bases), v3's map node and three patches, and the tree the snapshots shared.
    assert report.dead_blobs == 32 + 1 + 3 + 1


def test_writes_through_the_disk_store_patches(pool: ImagePool) -> None:
    info = pool.create("h1", "vm", 2 * MiB)
    disk = pool.open_disk(info)
    rng = random.Random(10)
    ref = bytearray(rng.randbytes(2 * MiB))
    disk.write(0, bytes(ref))
    pool.commit("h1", "vm")
    pool.dep.create_snapshot("h1", "one")
    before = dict(pool.blobs.stats)
    for offset, data in ((3 * BS + 100, b"partial"), (9 * BS, rng.randbytes(BS))):
        ref[offset : offset + len(data)] = data
        disk.write(offset, data)  # a read-modify-write, then a whole block with one page changed below
    ref[10 * BS + PAGE : 10 * BS + 2 * PAGE] = rng.randbytes(PAGE)
    disk.write(10 * BS, bytes(ref[10 * BS : 11 * BS]))
    pool.commit("h1", "vm")
    assert pool.blobs.stats["new_bytes"] - before["new_bytes"] < BS + 3 * PAGE + 2048  # not three whole blocks
    pool.dep.create_snapshot("h1", "two")
    two = pool.reader(pool.version("h1", "vm", "two"))
    one = pool.reader(pool.version("h1", "vm", "one"))
    assert patch_of(pool, two, 3)[1] == one.map.get(3)
    assert patch_of(pool, two, 9)[1] is None  # every page changed
    assert patch_of(pool, two, 10)[1] == one.map.get(10)
    pool.dep.blobs.cache.clear()
    assert two.read(0, 1 << 30) == ref
    disk.write(3 * BS + 200, b"again")  # a partial write over a patched block reads it whole first
    ref[3 * BS + 200 : 3 * BS + 205] = b"again"
    assert disk.read(0, 1 << 30) == ref


def test_a_patch_that_does_not_rebuild_its_block_is_an_error(pool: ImagePool, tmp_path: Path) -> None:
    img = tmp_path / "disk.raw"
    img.write_bytes(random.Random(11).randbytes(MiB))
    push(pool, "h1", "vm", img)
    write_pages(img, [3], seed=12)
    push(pool, "h1", "vm", img)
    info = pool.find("h1", "vm")
    entry = pool.reader(info).map.get(0)
    patch = decode_patch(pool.blobs.get(entry))
    other = pool.reader(info).map.get(1)  # a full block, but not the patch's base
    forged = pool.blobs.put(pool.blobs.get(entry).replace(patch.base, other, 1), PATCH)
    reader = pool.reader(info)
    reader.map.set(0, forged)
    with pytest.raises(CorruptBlob, match="does not rebuild"):
        reader.read(0, 10)


def test_catalog_rebuild_keeps_patches_and_their_bases(tmp_path: Path) -> None:
    from engine.catalog import open_catalog
    from engine.rebuild import rebuild
    from engine.storage import open_backend

    data, img = tmp_path / "data", tmp_path / "disk.raw"
    img.write_bytes(random.Random(13).randbytes(MiB))
    with Deployment.open(data) as dep:
        dep.add_source("h1")
        pool = ImagePool(dep)
        push(pool, "h1", "vm", img)
        dep.create_snapshot("h1", "one")
        second = write_pages(img, [2, 16 * 9 + 4], seed=14)
        push(pool, "h1", "vm", img)
        dep.create_snapshot("h1", "two")
        pool.close()
    for suffix in ("", "-wal", "-shm"):
        (data / f"catalog.db{suffix}").unlink(missing_ok=True)
    config = {"kind": "local", "path": str(data / "pool")}
    catalog = open_catalog(f"sqlite:///{data / 'catalog.db'}")
    try:
        assert rebuild(catalog, open_backend(config), config).problems == []
    finally:
        catalog.dispose()
    with Deployment.open(data) as dep:
        pool = ImagePool(dep)
        try:
            dep.delete_snapshot("h1", "one")
            assert collect(dep, repack_below=1.0).dead_blobs == 1  # one's map node; its blocks are bases
            dep.blobs.cache.clear()
            two = pool.reader(pool.version("h1", "vm", "two"))
            assert two.read(0, 1 << 30) == second and patch_of(pool, two, 9)[1] is not None
        finally:
            pool.close()
