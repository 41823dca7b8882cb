"""One contract suite for every Backend implementation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import NoSpace, ObjectNotFound
from engine.storage import Backend, open_backend
from engine.storage.local import LocalBackend
from engine.storage.memory import MemoryBackend


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
    else:
        yield LocalBackend(tmp_path / "pool")


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


def test_list_by_prefix(backend: Backend) -> None:
    keys = ["packs/aa/bb/1", "packs/aa/cc/2", "snapshots/3", "cairn-pool.json"]
    for k in keys:
        backend.put(k, k.encode())
    assert [k for k, _ in backend.list("packs/")] == keys[:2]
    assert dict(backend.list()) == {k: len(k) for k in keys}
    assert list(backend.list("nothing/")) == []


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/."])
def test_rejects_keys_that_escape(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError):
        backend.put(key, b"x")


def test_properties_size_workers(backend: Backend) -> None:
    assert backend.properties.connections >= 1


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
