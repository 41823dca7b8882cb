"""A pool's compression dictionary: small files compress against it, in every process, encrypted where the pool is."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import zstandard
from sqlalchemy import select

from engine import zdict
from engine.backup import backup_and_snapshot
from engine.catalog.schema import blobs, packs
from engine.codec import HEADER, ZSTD, ZSTD_DICT, Codec
from engine.deployment import Deployment
from engine.errors import CorruptBlob
from engine.packs import pack_key

from .test_encryption import PASS

MARKER = b"cairn-dictionary-marker-7f3a"


def _small_files(root: Path, count: int, seed: int) -> dict[str, bytes]:
    """Files of about 1.7 KiB that share words and a marker line, as source files share keywords."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choices(b"abcdefghijklmnopqrstuvwxyz", k=rnd.randint(3, 9))) for _ in range(400)]
    files = {}
    for i in range(count):
        body = MARKER + b"\n" + b" ".join(rnd.choices(words, k=280))
        path = root / f"d{i % 7}" / f"f{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        files[str(path.relative_to(root))] = body
    return files


def _methods(dep: Deployment) -> list[int]:
    """The compression id of every data blob in the file pool, read from the packs."""
    with dep.catalog.engine.connect() as conn:
        rows = conn.execute(
            select(packs.c.name, blobs.c.offset, blobs.c.length)
            .join(packs, packs.c.id == blobs.c.pack_id)
            .where(blobs.c.pool_id == dep.pool.id, blobs.c.kind == 0)
        ).all()
    return [HEADER.unpack_from(dep.backend.get(pack_key(n), o, ln))[2] for n, o, ln in rows]


def _dictionaries(data: Path) -> list[Path]:
    return sorted((data / "pool" / "dicts").glob("*"))


def test_small_files_compress_against_one_dictionary_per_pool(tmp_path: Path, data_dir: Path, db_url: str) -> None:
    trees = {name: _small_files(tmp_path / name, n, seed) for name, n, seed in (("s1", 800, 1), ("s2", 300, 2),
                                                                               ("s3", 300, 3))}  # fmt: skip
    with Deployment.open(data_dir, db_url) as dep:
        dep.add_source("h1")
        backup_and_snapshot(dep, "h1", tmp_path / "s1", "s1")  # its first 1 MiB are the samples
        named = dep.catalog.setting(zdict.setting_key(dep.pool.id))
        assert named is not None and [p.name for p in _dictionaries(data_dir)] == [f"{int(named):08x}"]
        backup_and_snapshot(dep, "h1", tmp_path / "s2", "s2")
        methods = _methods(dep)
    assert methods.count(ZSTD_DICT) >= 300 and methods.count(ZSTD) >= 500  # the samples compressed alone
    assert set(methods) <= {ZSTD, ZSTD_DICT}
    stored = Codec().decode(_dictionaries(data_dir)[0].read_bytes())
    assert zstandard.ZstdCompressionDict(stored).dict_id() == int(named)

    # Another process reads them, and writes against the same dictionary: the pool never gets a second one.
    with Deployment.open(data_dir, db_url) as dep:
        for snapshot in ("s1", "s2"):
            view = dep.snapshot("h1", snapshot)
            assert all(view.read(name.encode()) == body for name, body in trees[snapshot].items())
        backup_and_snapshot(dep, "h1", tmp_path / "s3", "s3")
        assert _methods(dep).count(ZSTD_DICT) >= methods.count(ZSTD_DICT) + 300
        view = dep.snapshot("h1", "s3")
        assert all(view.read(name.encode()) == body for name, body in trees["s3"].items())
    assert len(_dictionaries(data_dir)) == 1


def _trained_then_used(dep: Deployment, tmp_path: Path) -> dict[str, bytes]:
    """Back up enough small files to train the dictionary, then files that are compressed against it."""
    dep.add_source("h1")
    _small_files(tmp_path / "samples", 800, seed=4)
    backup_and_snapshot(dep, "h1", tmp_path / "samples", "s1")
    used = _small_files(tmp_path / "used", 50, seed=5)
    backup_and_snapshot(dep, "h1", tmp_path / "used", "s2")
    assert _methods(dep).count(ZSTD_DICT) >= 50
    return used


def test_an_encrypted_pools_dictionary_is_encrypted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Deployment.open(data, unlock=PASS, encrypt=True) as dep:
        files = _trained_then_used(dep, tmp_path)
    (stored,) = _dictionaries(data)
    assert MARKER not in stored.read_bytes()  # the trained dictionary holds it; the pool must not show it
    with Deployment.open(data, unlock=PASS) as dep:
        view = dep.snapshot("h1", "s2")
        assert all(view.read(name.encode()) == body for name, body in files.items())


def test_a_lost_dictionary_is_damage_and_writes_go_on_without_one(tmp_path: Path, data_dir: Path) -> None:
    with Deployment.open(data_dir) as dep:
        files = _trained_then_used(dep, tmp_path)
    (stored,) = _dictionaries(data_dir)
    stored.unlink()
    with Deployment.open(data_dir) as dep:
        view = dep.snapshot("h1", "s2")
        for name in files:
            with pytest.raises(CorruptBlob, match="no compression dictionary"):
                view.read(name.encode())
        more = _small_files(tmp_path / "more", 50, seed=6)
        backup_and_snapshot(dep, "h1", tmp_path / "more", "s3")
        view = dep.snapshot("h1", "s3")
        assert all(view.read(name.encode()) == body for name, body in more.items())


def test_a_failed_training_loses_nothing(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise zstandard.ZstdError("cannot train")

    monkeypatch.setattr(zstandard, "train_dictionary", refuse)
    files = _small_files(tmp_path / "src", 800, seed=7)
    with Deployment.open(data_dir) as dep:
        dep.add_source("h1")
        backup_and_snapshot(dep, "h1", tmp_path / "src", "s1")
        assert ZSTD_DICT not in _methods(dep)
        view = dep.snapshot("h1", "s1")
        assert all(view.read(name.encode()) == body for name, body in files.items())
    assert _dictionaries(data_dir) == []
