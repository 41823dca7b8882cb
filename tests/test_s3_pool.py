"""Deployments whose file pool is on S3 (a real SeaweedFS): back up, restore, and lose nothing to faults."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from engine.backup import BackupStats, backup_and_snapshot
from engine.catalog import open_catalog
from engine.catalog.schema import packs
from engine.check import check_pool
from engine.deployment import Deployment, default_db_url
from engine.restore import restore
from engine.storage import Backend
from engine.storage.faults import FaultyBackend
from engine.storage.filter import find_layer
from engine.storage.ratelimit import RateLimit
from engine.storage.retry import Retry
from engine.storage.s3 import S3Backend
from engine.storage.verify import Verify

from .conftest import new_bucket
from .servers import seaweedfs
from .test_backup_restore import cairn, cairn_json
from .trees import make_tree, rsync_differences

MiB = 1 << 20


def _write_tree(root: Path, seed: int, big_files: int = 4) -> None:
    """Small files, and big random ones that fill a pack each (16 MiB), each in its own directory.

    The backup reports progress after each directory: a kill can land between two big files.
    """
    rnd = random.Random(seed)
    for d in range(5):
        (root / f"d{d}").mkdir(parents=True, exist_ok=True)
        for f in range(30):
            (root / f"d{d}" / f"f{f}").write_bytes(rnd.randbytes(rnd.randrange(0, 30_000)))
    for i in range(big_files):
        (root / f"big{i}").mkdir(exist_ok=True)
        (root / f"big{i}" / "data").write_bytes(rnd.randbytes(17 * MiB))


def _packs_in_bucket(backend: Backend) -> set[str]:
    return {k.rsplit("/", 1)[1] for k, _ in backend.list("packs/")}


def _packs_in_catalog(dep: Deployment) -> set[str]:
    with dep.catalog.engine.connect() as conn:
        return set(conn.execute(select(packs.c.name).where(packs.c.pool_id == dep.pool.id)).scalars())


def _restored_identical(dep: Deployment, source: str, snapshot: str, src: Path, dest: Path) -> None:
    stats = restore(dep.snapshot(source, snapshot), b"", dest)
    assert stats.errors == []
    assert rsync_differences(src, dest) == []


def test_cli_backs_up_into_an_s3_pool_and_restores_it(tmp_path: Path, s3_config: dict[str, Any]) -> None:
    src, data, out = tmp_path / "src", tmp_path / "data", tmp_path / "out"
    make_tree(src)
    config = {**s3_config, "filters": {"verify": {}, "cache": {"max_bytes": 64 * MiB}}}
    (tmp_path / "pool.json").write_text(json.dumps(config))
    created = cairn_json(data, "pool", "create", str(tmp_path / "pool.json"))
    assert isinstance(created, dict) and created["backend"] == f"s3:{s3_config['bucket']} at {s3_config['endpoint']}"
    backed_up = cairn_json(data, "backup", "h1", str(src), "--snapshot", "one")
    assert isinstance(backed_up, dict) and backed_up["errors"] == []
    cairn(data, "restore", "h1", "one", str(out))
    assert rsync_differences(src, out) == []
    check = cairn_json(data, "pool", "scrub")
    assert isinstance(check, dict) and check["ok"] and check["packs"] >= 1
    assert any((data / "cache" / "file" / "packs").rglob("*"))  # the restore read through the cache
    s3 = S3Backend(s3_config)
    assert {k for k, _ in s3.list() if not k.startswith("packs/")} >= {"cairn-pool.json", "keys/id-key.json"}
    assert "secret" not in cairn(data, "pool", "list").stdout
    # A lost catalog comes back from the bucket alone.
    rebuilt = cairn_json(data, "catalog", "rebuild", "--force", "--pool", str(tmp_path / "pool.json"))
    assert isinstance(rebuilt, dict) and rebuilt["snapshots"] == 1 and rebuilt["problems"] == []
    cairn(data, "restore", "h1", "one", str(tmp_path / "out-rebuilt"))
    assert rsync_differences(src, tmp_path / "out-rebuilt") == []

    again = cairn(data, "pool", "create", str(tmp_path / "pool.json"))  # the same pool: nothing changes
    assert again.returncode == 0
    (tmp_path / "other.json").write_text(json.dumps({**s3_config, "prefix": "elsewhere"}))
    refused = cairn(data, "pool", "create", str(tmp_path / "other.json"), check=False)
    assert refused.returncode == 1 and "has a file pool already" in refused.stderr
    (tmp_path / "bad.json").write_text('{"kind": "s3", "bucket": "b", "secret": 1}')
    bad = cairn(tmp_path / "data2", "pool", "create", str(tmp_path / "bad.json"), check=False)
    assert bad.returncode == 1 and "unknown S3 settings: secret" in bad.stderr


@contextmanager
def _deployment_on(data: Path, config: dict[str, Any], wrap: Callable[[Backend], Backend]) -> Iterator[Deployment]:
    """A deployment whose pool backend is wrapped by `wrap` (a fault injector and filters)."""
    with Deployment.open(data, pool_config=config) as created:
        pool = created.pool
    dep = Deployment(open_catalog(default_db_url(data)), dataclasses.replace(pool, backend=wrap(pool.backend)), data)
    try:
        yield dep
    finally:
        dep.close()


def test_dropped_puts_stale_reads_and_slowdowns_lose_nothing(tmp_path: Path, s3_config: dict[str, Any]) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    _write_tree(src, seed=1, big_files=3)
    faults: list[FaultyBackend] = []

    def wrap(s3: Backend) -> Backend:
        faulty = FaultyBackend(s3)
        faulty.drop_puts([2])  # a pack vanishes after being acknowledged
        faulty.stale_reads(1)  # and every write reads back stale once
        faulty.slow_down("put", range(5, 10), retry_after=0.05)  # a storm of SlowDown
        faults.append(faulty)
        return Verify(Retry(RateLimit(faulty), first_delay=0.05, max_delay=0.2), read_delay=0.05)

    with _deployment_on(data, {**s3_config, "filters": {"retry": False}}, wrap) as dep:
        dep.add_source("h1")
        backup_and_snapshot(dep, "h1", src, "one")
        faulty, verify, limiter = faults[0], find_layer(dep.backend, Verify), find_layer(dep.backend, RateLimit)
        assert len(faulty.dropped) == 1 and verify is not None and verify.rewrites == 1
        assert limiter is not None and limiter.throttled == 5
        assert _packs_in_catalog(dep) == _packs_in_bucket(S3Backend(s3_config)) != set()
        assert check_pool(dep.blobs).ok
        _restored_identical(dep, "h1", "one", src, tmp_path / "out")


def test_s3_server_killed_mid_backup_and_restarted_loses_nothing(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    _write_tree(src, seed=2)
    with seaweedfs() as server:
        config = new_bucket(server, filters={"retry": {"attempts": 10, "first_delay": 0.2, "max_delay": 2}})
        restart = threading.Timer(1.0, server.start)

        def kill_once(stats: BackupStats) -> None:
            # After two big files: a pack is stored, others are on their way.
            if stats.bytes_read > 34 * MiB and restart.ident is None:  # once
                server.kill()
                restart.start()

        try:
            with Deployment.open(data, pool_config=config) as dep:
                dep.add_source("h1")
                backup_and_snapshot(dep, "h1", src, "before")
                (src / "d0" / "new").write_bytes(os.urandom(5 * MiB))
                for i in range(4):
                    (src / f"big{i}" / "data").write_bytes(os.urandom(17 * MiB))
                backup_and_snapshot(dep, "h1", src, "during", progress=kill_once)
                assert restart.ident is not None, "the backup ended before the server was killed"
                restart.join(30)
                retry = find_layer(dep.backend, Retry)
                assert retry is not None and retry.retries > 0
                assert _packs_in_catalog(dep) == _packs_in_bucket(S3Backend(config))
        finally:
            restart.cancel()
            if restart.ident is not None:
                restart.join()  # a server it starts must start inside `seaweedfs()`, which ends it
        with Deployment.open(data) as dep:  # as a fresh process sees it
            assert [s.name for s in dep.list_snapshots("h1")] == ["before", "during"]
            assert check_pool(dep.blobs).ok
            _restored_identical(dep, "h1", "during", src, tmp_path / "out")
