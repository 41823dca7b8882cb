"""Fixtures: data directories, catalogs on SQLite and on a real PostgreSQL, buckets on a real SeaweedFS, image pools."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.deployment import Deployment
from image.pool import ImagePool

from .servers import SeaweedFS, postgres, seaweedfs

_db_names = itertools.count()
_bucket_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, int]]:
    with postgres() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedFS]:
    """One SeaweedFS for the session (it starts in under a second); tests that kill a server start their own."""
    with seaweedfs() as server:
        yield server


@pytest.fixture
def s3_config(s3_server: SeaweedFS) -> dict[str, Any]:
    """The backend configuration of a fresh, empty bucket on the session's SeaweedFS."""
    return new_bucket(s3_server)


def new_bucket(server: SeaweedFS, **extra: object) -> dict[str, Any]:
    config = server.config(f"cairn-{next(_bucket_names)}", **extra)
    server.create_bucket(str(config["bucket"]))
    return config


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty catalog database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    host, port = request.getfixturevalue("pg_server")
    name = f"cairn_{next(_db_names)}"
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://postgres@{host}:{port}/{name}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def deployment(data_dir: Path, db_url: str) -> Iterator[Deployment]:
    dep = Deployment.open(data_dir, db_url)
    try:
        yield dep
    finally:
        dep.close()


@pytest.fixture
def sqlite_deployment(data_dir: Path) -> Iterator[Deployment]:
    dep = Deployment.open(data_dir)
    try:
        yield dep
    finally:
        dep.close()


@pytest.fixture
def pool(deployment: Deployment) -> Iterator[ImagePool]:
    """The image pool of `deployment`, which has one source, h1."""
    deployment.add_source("h1")
    p = ImagePool(deployment)
    try:
        yield p
    finally:
        p.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_errors_logged(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test fails on any ERROR record or traceback in the log, but those its `logs_errors` marker expects."""
    handler = _Records()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    expected = [re.compile(p) for m in request.node.iter_markers("logs_errors") for p in m.args]
    unexpected = [r for r in handler.records if not any(p.search(r.getMessage()) for p in expected)]
    assert not unexpected, "logged unexpectedly:\n" + "\n".join(
        f"{r.levelname} {r.name}: {r.getMessage()}" for r in unexpected
    )
