"""The catalog on SQLite and PostgreSQL: migrations, idempotent inserts, pool identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from engine.catalog import open_catalog
from engine.catalog.schema import blobs, metadata, packs, pools
from engine.deployment import Deployment
from engine.errors import PoolMismatch, PoolMissing
from engine.pool import POOL_FILE


def test_migrations_create_every_table(db_url: str) -> None:
    catalog = open_catalog(db_url)
    try:
        names = set(inspect(catalog.engine).get_table_names())
        assert set(metadata.tables) <= names
        assert "alembic_version" in names
        open_catalog(db_url).dispose()  # a second upgrade is a no-op
    finally:
        catalog.dispose()


def test_insert_ignore_is_idempotent(db_url: str) -> None:
    catalog = open_catalog(db_url)
    try:
        with catalog.engine.begin() as conn:
            pid = catalog.insert_id(
                conn, pools.insert().values(uuid="u", kind="file", backend="{}", structure=1, created=0)
            )
            pack = catalog.insert_id(
                conn, packs.insert().values(pool_id=pid, name="p", size=1, blob_count=1, created=0)
            )
            row = {
                "pool_id": pid,
                "id": b"i" * 32,
                "pack_id": pack,
                "offset": 0,
                "length": 1,
                "raw_length": 1,
                "kind": 0,
            }
            catalog.insert_ignore(conn, blobs, [row])
            catalog.insert_ignore(conn, blobs, [row, {**row, "id": b"j" * 32}])
            assert conn.execute(select(func.count()).select_from(blobs)).scalar() == 2
    finally:
        catalog.dispose()


def test_deployment_opens_on_both_catalogs(deployment: Deployment) -> None:
    deployment.add_source("h1")
    assert [s.name for s in deployment.list_sources()] == ["h1"]


def test_foreign_pool_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    Deployment.open(a).close()
    Deployment.open(b).close()
    (a / "pool" / POOL_FILE).write_bytes((b / "pool" / POOL_FILE).read_bytes())
    with pytest.raises(PoolMismatch, match="expects pool"):
        Deployment.open(a)


def test_missing_pool_is_refused(tmp_path: Path) -> None:
    Deployment.open(tmp_path).close()
    (tmp_path / "pool" / POOL_FILE).unlink()
    with pytest.raises(PoolMissing, match="missing"):
        Deployment.open(tmp_path)


def test_pool_without_catalog_points_to_rebuild(tmp_path: Path) -> None:
    with Deployment.open(tmp_path) as dep:
        dep.add_source("h1")
        dep.create_snapshot("h1", "s")  # a pool with data (an empty one is simply taken over)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"catalog.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(PoolMismatch, match="catalog rebuild"):
        Deployment.open(tmp_path)


def test_newer_pool_structure_is_refused(tmp_path: Path) -> None:
    Deployment.open(tmp_path).close()
    path = tmp_path / "pool" / POOL_FILE
    doc = json.loads(path.read_text())
    doc["structure"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(PoolMismatch, match="structure version 99"):
        Deployment.open(tmp_path)


def test_head_constant_matches_the_migrations() -> None:
    from alembic.script import ScriptDirectory

    from engine.catalog.db import HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


def test_a_migration_cut_short_leaves_nothing_half_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a kill mid-migration would: the schema is all there or not at all."""
    from alembic import op

    from engine.catalog import db

    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    made = []
    real = op.create_table

    def create_then_die(name: str, *args: object, **kwargs: object) -> object:
        if len(made) == 3:
            raise KeyboardInterrupt  # the process dies here
        made.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(op, "create_table", create_then_die)
    with pytest.raises(KeyboardInterrupt):
        db.open_catalog(url)
    monkeypatch.setattr(op, "create_table", real)
    catalog = db.open_catalog(url)  # starts over cleanly
    try:
        assert db.current_revision(catalog) == db.HEAD
    finally:
        catalog.dispose()
