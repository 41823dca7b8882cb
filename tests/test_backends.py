"""One contract suite for every Backend implementation and every filter stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import blake3
import pytest

from engine.errors import NoSpace, ObjectNotFound
from engine.storage import Backend, open_backend
from engine.storage.faults import FaultyBackend
from engine.storage.filter import find_layer
from engine.storage.local import LocalBackend
from engine.storage.memory import MemoryBackend
from engine.storage.ratelimit import RateLimit
from engine.storage.retry import Retry
from engine.storage.spool import Spool
from engine.storage.verify import Verify

MiB = 1 << 20
# Small enough that the big-object test uploads in three parts.
MULTIPART = {"multipart_threshold": 6 * MiB, "part_size": 5 * MiB}
FILTERS = {
    "ratelimit": {"requests": {"put": [1000, 1], "get": [1000, 1]}, "bytes_per_second": 1 << 40},
    "retry": {"attempts": 3, "first_delay": 0.01},
    "verify": {"reads": 2, "read_delay": 0.01},
    "spool": {},
    "cache": {"max_bytes": 8 * MiB},
}


def _no_wait(seconds: float) -> None:
    pass


def _faulty() -> Backend:
    """Every third call of each operation fails, temporarily or throttled; retry hides it, and reads are stale."""
    faulty = FaultyBackend(MemoryBackend())
    for op in ("put", "get", "stat", "delete", "list"):
        faulty.fail(op, range(3, 3000, 6))
        faulty.slow_down(op, range(6, 3000, 6), retry_after=0)
    faulty.stale_reads(1)
    stack = Verify(Retry(RateLimit(faulty, sleep=_no_wait), sleep=_no_wait), read_delay=0, sleep=_no_wait)
    return stack


def _open(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "memory":
        return MemoryBackend()
    if kind == "local":
        return LocalBackend(tmp_path / "pool")
    if kind == "faulty":
        return _faulty()
    filters: dict[str, Any] = {
        **FILTERS, "spool": {"path": str(tmp_path / "spool")},
        "cache": {**FILTERS["cache"], "path": str(tmp_path / "cache")},
    }  # fmt: skip
    if kind == "local+filters":
        return open_backend({"kind": "local", "path": str(tmp_path / "pool"), "filters": filters})
    config = {**request.getfixturevalue("s3_config"), **MULTIPART}
    if kind == "s3":
        return open_backend({**config, "filters": {"retry": False}})
    return open_backend({**config, "filters": filters})


@pytest.fixture(params=["memory", "local", "s3", "local+filters", "s3+filters", "faulty"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened = _open(request.param, request, tmp_path)
    yield opened
    spool = find_layer(opened, Spool)
    if spool is not None:
        spool.close()


def test_put_get_stat_delete(backend: Backend) -> None:
    assert backend.stat("packs/ab/cd/x") is None
    backend.put("packs/ab/cd/x", b"0123456789")
    assert backend.stat("packs/ab/cd/x") == 10
    assert backend.get("packs/ab/cd/x") == b"0123456789"
    assert backend.get("packs/ab/cd/x", 3, 4) == b"3456"
    assert backend.get("packs/ab/cd/x", 8) == b"89"
    backend.put("packs/ab/cd/x", memoryview(b"new"))
    assert backend.get("packs/ab/cd/x") == b"new"
    backend.delete("packs/ab/cd/x")
    backend.delete("packs/ab/cd/x")
    assert backend.stat("packs/ab/cd/x") is None
    with pytest.raises(ObjectNotFound):
        backend.get("packs/ab/cd/x")


def test_edges_of_reads(backend: Backend) -> None:
    backend.put("snapshots/empty", b"")
    assert backend.stat("snapshots/empty") == 0
    assert backend.get("snapshots/empty") == b""
    backend.put("snapshots/ten", b"0123456789")
    assert backend.get("snapshots/ten", 10) == b""
    assert backend.get("snapshots/ten", 20, 5) == b""
    assert backend.get("snapshots/ten", 4, 0) == b""
    assert backend.get("snapshots/ten", 8, 100) == b"89"
    with pytest.raises(ObjectNotFound):
        backend.get("snapshots/none", 0, 0)
    backend.delete("snapshots/never-written")


def test_list_by_prefix(backend: Backend) -> None:
    keys = ["packs/aa/bb/1", "packs/aa/cc/2", "snapshots/3", "cairn-pool.json"]
    for k in keys:
        backend.put(k, k.encode())
    assert [k for k, _ in backend.list("packs/")] == keys[:2]
    assert dict(backend.list()) == {k: len(k) for k in keys}
    assert list(backend.list("nothing/")) == []


def test_big_object_and_pack_ranges(backend: Backend) -> None:
    """12 MiB: a multipart upload on S3; a pack key, so the read cache keeps it."""
    data = os.urandom(12 * MiB)
    key = "packs/" + blake3.blake3(data).hexdigest()
    backend.put(key, data)
    assert backend.stat(key) == len(data)
    edge = 5 * MiB  # a part boundary
    assert backend.get(key, edge - 10, 20) == data[edge - 10 : edge + 10]
    assert backend.get(key, len(data) - 7) == data[-7:]
    assert backend.get(key) == data
    assert backend.get(key, 1, 3) == data[1:4]


def test_concurrent_puts(backend: Backend) -> None:
    keys = [f"packs/{i:02x}/{j}" for i in range(8) for j in range(6)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: backend.put(k, k.encode() * 100), keys))
    assert dict(backend.list("packs/")) == {k: len(k) * 100 for k in keys}
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(backend.get, keys)) == [k.encode() * 100 for k in keys]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/."])
def test_rejects_keys_that_escape(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError):
        backend.put(key, b"x")


def test_properties_size_workers(backend: Backend) -> None:
    assert backend.properties.connections >= 1
    assert backend.properties.put_requests(1) == 1


def test_open_backend_by_config(tmp_path: Path) -> None:
    b = open_backend({"kind": "local", "path": str(tmp_path)})
    b.put("a", b"1")
    assert (tmp_path / "a").read_bytes() == b"1"


def test_local_put_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path)
    b.put("x/y", b"1" * 1000)
    assert sorted(os.listdir(tmp_path / "x")) == ["y"]


def test_local_full_disk_is_no_space(tmp_path: Path) -> None:
    """A tmpfs of 1 MiB stands in for a full pool disk."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.system(f"mount -t tmpfs -o size=1m tmpfs {mnt}") != 0:
        pytest.fail("mounting a tmpfs needs root; run the suite as root")
    try:
        b = LocalBackend(mnt)
        b.put("small", b"x" * 1000)
        with pytest.raises(NoSpace):
            b.put("big", os.urandom(2 << 20))
        assert b.get("small") == b"x" * 1000
        assert [k for k, _ in b.list()] == ["small"]
    finally:
        os.system(f"umount {mnt}")
