"""An image pool on its own backend: blocks go there, files stay in the file pool; GC, scrub, keys, refusals."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.backup import backup_and_snapshot
from engine.check import scrub
from engine.deployment import Deployment
from engine.errors import Locked, NotEmpty
from engine.gc import collect
from engine.imagesetup import create_image_pool
from engine.keyring import Unlock
from engine.restore import restore
from engine.snapshots import COMMITTED, STORED
from image.pool import ImagePool
from image.push import push

from .test_backup_restore import cairn, cairn_json
from .test_spool import WAIT, Gate
from .trees import rsync_differences

MiB = 1 << 20
PASS = Unlock(passphrase=b"correct horse battery staple")
MARKER = b"cairn-image-pool-plaintext-marker:" * 2048  # 68 KiB: more than a block


def _packs(pool_dir: Path) -> dict[str, int]:
    """A local pool's packs and their sizes."""
    return {p.name: p.stat().st_size for p in (pool_dir / "packs").rglob("*") if p.is_file()}


def _open_with_image_pool(data: Path, images: Path, db_url: str | None = None, **kw: Any) -> Deployment:
    """A deployment given an image pool on the local directory `images`, opened anew."""
    with Deployment.open(data, db_url, **kw) as dep:
        create_image_pool(dep, {"kind": "local", "path": str(images)})
    kw.pop("encrypt", None)
    return Deployment.open(data, db_url, **kw)


@pytest.fixture
def dep(tmp_path: Path, db_url: str) -> Iterator[Deployment]:
    d = _open_with_image_pool(tmp_path / "data", tmp_path / "images", db_url)
    try:
        yield d
    finally:
        d.close()


def _push(dep: Deployment, img: Path) -> None:
    """Push `img` as disk vm of source h1, as `cairn image push` does."""
    pool = ImagePool(dep)
    try:
        push(pool, "h1", "vm", img)
    finally:
        pool.close()


def _files(src: Path) -> Path:
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.bin").write_bytes(os.urandom(100_000 + i))
    return src


def test_blocks_go_to_the_image_pool_and_files_to_the_file_pool(dep: Deployment, tmp_path: Path) -> None:
    assert dep.image_pool is not None and dep.image_blobs is not dep.blobs
    file_pool, image_pool = tmp_path / "data" / "pool", tmp_path / "images"
    src = _files(tmp_path / "src")
    dep.add_source("h1")
    backup_and_snapshot(dep, "h1", str(src), "files")
    files_only = sum(_packs(file_pool).values())
    assert files_only >= 500_000 and not _packs(image_pool)

    pool = ImagePool(dep)
    img = tmp_path / "disk.raw"
    first = os.urandom(4 * MiB)
    img.write_bytes(first)
    try:
        push(pool, "h1", "vm", img)
        dep.create_snapshot("h1", "one")
        # Three quarters of the blocks change: version one's old blocks die with it.
        second = first[:MiB] + os.urandom(3 * MiB)
        img.write_bytes(second)
        push(pool, "h1", "vm", img)
        dep.create_snapshot("h1", "two")
    finally:
        pool.close()
    # The file pool gained trees only (a few KiB), the image pool every block.
    assert sum(_packs(file_pool).values()) - files_only < 64 << 10
    assert sum(_packs(image_pool).values()) >= 7 * MiB
    usage = dep.pool_usage()
    assert usage["image_pool"]["kind"] == "image" and usage["image_pool"]["stored_bytes"] >= 7 * MiB
    assert usage["stored_bytes"] < files_only + (64 << 10)  # the file pool's keys as before

    pool = ImagePool(dep)
    try:
        assert pool.reader(pool.version("h1", "vm", "one")).read(0, 1 << 30) == first
        assert pool.reader(pool.version("h1", "vm", "two")).read(0, 1 << 30) == second
        file_packs, image_before = _packs(file_pool), sum(_packs(image_pool).values())
        dep.delete_snapshot("h1", "one")
        report = collect(dep)
        assert report.dead_blobs >= 40 and report.bytes_freed >= 2 * MiB
        assert _packs(file_pool) == file_packs  # nothing of the file pool died
        assert sum(_packs(image_pool).values()) <= image_before - 2 * MiB
        dep.image_blobs.cache.clear()
        assert pool.reader(pool.version("h1", "vm", "two")).read(0, 1 << 30) == second
        assert pool.reader(pool.find("h1", "vm")).read(0, 1 << 30) == second
    finally:
        pool.close()
    restore(dep.snapshot("h1", "two"), b"", str(tmp_path / "out"))
    assert rsync_differences(src, tmp_path / "out") == []
    checked = scrub(dep)[0]
    assert checked.ok and checked.packs == len(_packs(file_pool)) + len(_packs(image_pool))
    assert collect(dep).dead_blobs == 0  # everything left is marked again


def test_an_encrypted_image_pool_holds_no_plaintext(tmp_path: Path) -> None:
    data, images = tmp_path / "data", tmp_path / "images"
    dep = _open_with_image_pool(data, images, unlock=PASS, encrypt=True)
    img = tmp_path / "disk.raw"
    img.write_bytes(MARKER * 8)
    try:
        assert dep.image_pool is not None and dep.image_pool.keys.encrypted
        dep.add_source("h1")
        _push(dep, img)
        dep.create_snapshot("h1", "one")
    finally:
        dep.close()
    assert (images / "keys" / "deployment.json").read_bytes() == (
        data / "pool" / "keys" / "deployment.json"
    ).read_bytes()
    assert not (images / "keys" / "id-key.json").exists()
    assert _packs(images)
    for path in images.rglob("*"):
        if path.is_file():
            assert MARKER[:40] not in path.read_bytes(), path
    with pytest.raises(Locked):
        Deployment.open(data)
    with Deployment.open(data, unlock=PASS) as dep:
        pool = ImagePool(dep)
        assert pool.reader(pool.version("h1", "vm", "one")).read(0, 1 << 30) == img.read_bytes()
        pool.close()
        assert scrub(dep)[0].ok


def test_creation_is_refused_once_images_hold_blocks_in_the_file_pool(tmp_path: Path, db_url: str) -> None:
    data = tmp_path / "data"
    img = tmp_path / "disk.raw"
    img.write_bytes(os.urandom(MiB))
    with Deployment.open(data, db_url) as dep:
        dep.add_source("h1")
        _push(dep, img)
        with pytest.raises(NotEmpty, match="not moved"):
            create_image_pool(dep, {"kind": "local", "path": str(tmp_path / "images")})
    with Deployment.open(data, db_url) as dep:
        assert dep.image_pool is None and dep.image_blobs is dep.blobs
        assert dep.pool_usage()["image_pool"] is None
        pool = ImagePool(dep)
        assert pool.reader(pool.find("h1", "vm")).read(0, 1 << 30) == img.read_bytes()
        pool.close()
    assert not (tmp_path / "images" / "cairn-pool.json").exists()


def test_cli_image_pool_create_push_list_scrub(tmp_path: Path) -> None:
    data, images = tmp_path / "data", tmp_path / "images"
    config = tmp_path / "images.json"
    config.write_text(json.dumps({"kind": "local", "path": str(images)}))
    created = cairn_json(data, "image", "pool", "create", str(config))
    assert isinstance(created, dict) and created["kind"] == "image" and created["packs"] == 0
    refused = cairn(data, "image", "pool", "create", str(config), check=False)
    assert refused.returncode != 0 and "has an image pool already" in refused.stderr + refused.stdout
    img = tmp_path / "disk.raw"
    img.write_bytes(os.urandom(2 * MiB))
    cairn(data, "image", "push", "h1", "vm", str(img), "--snapshot", "one")
    pools = cairn_json(data, "pool", "list")
    assert isinstance(pools, list) and [p["kind"] for p in pools] == ["file", "image"]
    assert pools[1]["stored_bytes"] >= 2 * MiB and pools[0]["stored_bytes"] < 64 << 10
    assert "image_pool" not in pools[0] and "snapshot_bytes" in pools[0]
    checked = cairn_json(data, "pool", "check")
    assert isinstance(checked, dict) and checked["image_pool"]["pool"] == pools[1]["uuid"]
    scrubbed = cairn_json(data, "pool", "scrub")
    assert isinstance(scrubbed, dict) and scrubbed["ok"] and scrubbed["packs"] >= 2
    out = tmp_path / "back.raw"
    with Deployment.open(data) as dep:
        pool = ImagePool(dep)
        out.write_bytes(pool.reader(pool.version("h1", "vm", "one")).read(0, 1 << 30))
        pool.close()
    assert out.read_bytes() == img.read_bytes()
    other = tmp_path / "other"
    cairn(other, "image", "push", "h1", "vm", str(img))
    refused = cairn(other, "image", "pool", "create", str(config), check=False)
    assert refused.returncode != 0 and "not moved" in refused.stderr + refused.stdout


def test_images_on_local_disk_while_files_are_on_s3(tmp_path: Path, s3_config: dict[str, Any]) -> None:
    data, images = tmp_path / "data", tmp_path / "images"
    dep = _open_with_image_pool(data, images, pool_config=s3_config)
    src = _files(tmp_path / "src")
    img = tmp_path / "disk.raw"
    img.write_bytes(os.urandom(2 * MiB))
    try:
        dep.add_source("h1")
        backup_and_snapshot(dep, "h1", str(src), "files")
        pool = ImagePool(dep)
        try:
            push(pool, "h1", "vm", img)
            dep.create_snapshot("h1", "one")
            assert pool.reader(pool.version("h1", "vm", "one")).read(0, 1 << 30) == img.read_bytes()
        finally:
            pool.close()
        usage = dep.pool_usage()
        assert "s3:" in usage["backend"] and usage["image_pool"]["backend"] == f"local:{images}"
        assert 500_000 <= usage["stored_bytes"] < MiB  # files and trees only
        assert usage["image_pool"]["stored_bytes"] >= 2 * MiB
        assert sum(_packs(images).values()) >= 2 * MiB
        restore(dep.snapshot("h1", "one"), b"", str(tmp_path / "out"))
        assert rsync_differences(src, tmp_path / "out") == []
        assert collect(dep).dead_blobs == 0
        assert scrub(dep)[0].ok
    finally:
        dep.close()


def test_catalog_rebuild_finds_the_image_pool_blocks(tmp_path: Path) -> None:
    data, images = tmp_path / "data", tmp_path / "images"
    config = tmp_path / "images.json"
    config.write_text(json.dumps({"kind": "local", "path": str(images)}))
    cairn(data, "image", "pool", "create", str(config))
    img = tmp_path / "disk.raw"
    img.write_bytes(os.urandom(2 * MiB))
    cairn(data, "image", "push", "h1", "vm", str(img), "--snapshot", "one")
    partial = cairn(data, "catalog", "rebuild", "--force", check=False)  # the file pool names the image pool
    assert partial.returncode != 0 and "--image-pool" in partial.stderr + partial.stdout
    rebuilt = cairn_json(data, "catalog", "rebuild", "--force", "--image-pool", str(config))
    assert isinstance(rebuilt, dict) and rebuilt["problems"] == [] and rebuilt["snapshots"] == 1
    pools = cairn_json(data, "pool", "list")
    assert isinstance(pools, list) and [p["kind"] for p in pools] == ["file", "image"]
    assert pools[1]["stored_bytes"] >= 2 * MiB
    with Deployment.open(data) as dep:
        pool = ImagePool(dep)
        assert pool.reader(pool.version("h1", "vm", "one")).read(0, 1 << 30) == img.read_bytes()
        assert pool.reader(pool.find("h1", "vm")).read(0, 1 << 30) == img.read_bytes()
        pool.close()
        assert collect(dep).dead_blobs == 0 and scrub(dep)[0].ok
    refused = cairn(data, "catalog", "rebuild", "--force", "--pool", str(config), check=False)
    assert refused.returncode != 0 and "rebuild from the file pool" in refused.stderr + refused.stdout


def test_a_snapshot_is_stored_once_the_image_pool_spool_drains(tmp_path: Path) -> None:
    data, images = tmp_path / "data", tmp_path / "images"
    with Deployment.open(data) as dep:
        create_image_pool(dep, {"kind": "local", "path": str(images), "filters": {"spool": {}}})
    img = tmp_path / "disk.raw"
    img.write_bytes(os.urandom(MiB))
    with Deployment.open(data) as dep:
        assert dep.image_spool is not None and dep.image_spool.wait_drained(WAIT)
        gate = Gate(dep.image_spool.inner)
        dep.image_spool.inner = gate  # the image pool goes offline; the file pool stays
        dep.add_source("h1")
        pool = ImagePool(dep)
        try:
            push(pool, "h1", "vm", img)
            info = dep.create_snapshot("h1", "one")
            assert info.state == COMMITTED and dep.mark_stored() == []
            usage = dep.pool_usage()
            assert usage["image_pool"]["spool_objects"] > 0 and usage["spool_objects"] == 0
            assert pool.reader(pool.version("h1", "vm", "one")).read(0, 1 << 30) == img.read_bytes()  # from the spool
            gate.open.set()
            assert dep.image_spool.wait_drained(WAIT)
            assert dep.mark_stored() == [info.uuid] and dep.list_snapshots()[0].state == STORED
        finally:
            pool.close()
    assert _packs(images)
