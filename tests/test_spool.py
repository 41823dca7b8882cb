"""The write-back spool: backups finish at local-disk speed; the queue drains, also after a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.deployment import Deployment
from engine.errors import BackendError
from engine.snapshots import COMMITTED, STORED
from engine.storage.filter import Filter
from engine.storage.local import LocalBackend
from engine.storage.spool import Spool

from .test_backup_restore import CAIRN
from .trees import make_tree, rsync_differences

WAIT = 60.0


class Gate(Filter):
    """A pool that can be switched off: puts fail as an unreachable service's do."""

    def __init__(self, inner: Any):
        super().__init__(inner)
        self.open = threading.Event()

    def put(self, key: str, data: bytes | memoryview) -> None:
        if not self.open.is_set():
            raise BackendError("pool unreachable", temporary=True)
        self.inner.put(key, data)


def test_spool_queues_survives_restart_and_drains(tmp_path: Path) -> None:
    pool = Gate(LocalBackend(tmp_path / "pool"))
    spool = Spool(pool, tmp_path / "spool")
    spool.put("packs/aa/bb/one", b"1" * 1000)
    spool.put("snapshots/x", b"snap")
    assert spool.get("packs/aa/bb/one", 10, 5) == b"11111" and spool.stat("snapshots/x") == 4
    assert dict(spool.list("packs/")) == {"packs/aa/bb/one": 1000}
    assert spool.backlog() == (2, 1004) and not spool.wait_drained(0.3)
    assert not spool.online and "unreachable" in (spool.last_error or "")
    spool.close()  # a restart: the queue is the directory
    again = Spool(pool, tmp_path / "spool")
    assert again.backlog() == (2, 1004)
    mark = again.mark()
    pool.open.set()
    assert again.wait_drained(WAIT) and again.drained_through() >= mark and again.online
    assert pool.inner.get("packs/aa/bb/one") == b"1" * 1000
    assert list(again.local.list()) == []
    again.delete("snapshots/x")
    assert again.stat("snapshots/x") is None
    again.close()


def test_a_deleted_key_is_not_brought_back_by_its_upload(tmp_path: Path) -> None:
    pool = Gate(LocalBackend(tmp_path / "pool"))
    spool = Spool(pool, tmp_path / "spool")
    spool.put("k", b"data")
    spool.delete("k")
    pool.open.set()
    assert spool.wait_drained(WAIT)
    time.sleep(0.2)  # a drain thread holding the key finishes its round
    assert pool.inner.stat("k") is None and spool.stat("k") is None
    spool.close()


class Held(Filter):
    """A pool whose uploads wait until let through."""

    def __init__(self, inner: Any):
        super().__init__(inner)
        self.started, self.through = threading.Event(), threading.Event()

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.started.set()
        assert self.through.wait(WAIT)
        self.inner.put(key, data)


def test_an_upload_of_older_bytes_ending_during_a_new_put_keeps_the_new_bytes(tmp_path: Path) -> None:
    pool = Held(LocalBackend(tmp_path / "pool"))
    spool = Spool(pool, tmp_path / "spool")
    spool.put("k", b"old bytes")
    assert pool.started.wait(WAIT)  # the old bytes are being uploaded
    written, go_on = threading.Event(), threading.Event()
    real = spool.local.put

    def put_then_pause(key: str, data: bytes | memoryview) -> None:
        real(key, data)
        written.set()
        assert go_on.wait(WAIT)

    spool.local.put = put_then_pause  # type: ignore[method-assign]
    putter = threading.Thread(target=spool.put, args=("k", b"new"))
    putter.start()
    assert written.wait(WAIT)  # the new bytes are in the spool directory, not yet queued
    pool.through.set()  # the old upload ends now
    deadline = time.monotonic() + WAIT
    while pool.inner.stat("k") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # its drain thread finishes the round
    go_on.set()
    putter.join(WAIT)
    assert spool.get("k") == b"new"
    assert spool.wait_drained(WAIT)
    assert pool.inner.get("k") == b"new"
    spool.close()


def _spooled_config(tmp_path: Path) -> dict[str, Any]:
    return {"kind": "local", "path": str(tmp_path / "remote"), "filters": {"spool": {}}}


def test_snapshots_are_committed_then_stored(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    data = tmp_path / "data"
    with Deployment.open(data, pool_config=_spooled_config(tmp_path)) as dep:
        assert dep.spool is not None
        gate = Gate(dep.spool.inner)
        dep.spool.inner = gate  # the pool goes offline
        from engine.backup import backup_and_snapshot

        dep.add_source("h1")
        info, _ = backup_and_snapshot(dep, "h1", str(src), "one")
        assert info.state == COMMITTED and dep.list_snapshots()[0].state == COMMITTED
        assert dep.spool.backlog()[0] > 0 and not dep.spool.online
        restore_dir = tmp_path / "out"
        from engine.restore import restore

        restore(dep.snapshot("h1", "one"), b"", str(restore_dir))  # read from the spool
        assert rsync_differences(src, restore_dir) == []
        gate.open.set()  # back online
        assert dep.spool.wait_drained(WAIT)
        assert dep.mark_stored() == [info.uuid] and dep.list_snapshots()[0].state == STORED
    assert list((data / "writeback" / "file").rglob("*")) == [p for p in (data / "writeback" / "file").rglob("*")
                                                                if p.is_dir()]  # fmt: skip


def test_killed_mid_backup_the_backlog_drains_after_restart(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    big = src / "big"
    big.write_bytes(os.urandom(48 << 20))
    data = tmp_path / "data"
    config = tmp_path / "pool.json"
    config.write_text(json.dumps(_spooled_config(tmp_path)))
    subprocess.run([*CAIRN, "--data", str(data), "pool", "create", str(config)], check=True, capture_output=True)
    subprocess.run([*CAIRN, "--data", str(data), "backup", "h1", str(src), "--snapshot", "one"], check=True,
                   capture_output=True)  # fmt: skip
    first = tmp_path / "first"
    subprocess.run(["cp", "-a", str(src), str(first)], check=True)
    big.write_bytes(os.urandom(48 << 20))
    proc = subprocess.Popen([*CAIRN, "--data", str(data), "backup", "h1", str(src), "--snapshot", "two"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Deployment.open(data) as dep:
        assert dep.spool is not None and dep.spool.wait_drained(WAIT)
        names = [s.name for s in dep.list_snapshots()]
        assert "one" in names
        from engine.restore import restore

        for name in names:  # every snapshot reads back byte-identical, from the pool now
            out = tmp_path / "out" / name
            restore(dep.snapshot("h1", name), b"", str(out))
            assert rsync_differences(first if name == "one" else src, out) == []
        dep.mark_stored()
        assert all(s.state == STORED for s in dep.list_snapshots())
    remote = LocalBackend(tmp_path / "remote")
    assert any(k.startswith("packs/") for k, _ in remote.list())
    assert list(LocalBackend(data / "writeback" / "file").list()) == []


@pytest.mark.parametrize("bad", [{"spool": {"max_bytes": 5}}, {"spool": {"color": 1}}, {"spool": []}])
def test_bad_spool_settings_are_refused(tmp_path: Path, bad: dict[str, Any]) -> None:
    from engine.errors import InvalidArgument
    from engine.storage import open_backend

    with pytest.raises(InvalidArgument):
        open_backend({"kind": "local", "path": str(tmp_path), "filters": bad}, spool_dir=tmp_path / "s")


def test_a_full_spool_disk_fails_the_backup_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    from engine.backup import backup_and_snapshot
    from engine.errors import NoSpace
    from engine.restore import restore

    from .test_faults import tmpfs

    data = tmp_path / "data"
    first, second = tmp_path / "first", tmp_path / "second"
    for tree, size in ((first, 12 << 20), (second, 12 << 20)):  # one pack each: both do not fit at once
        tree.mkdir()
        (tree / "f").write_bytes(os.urandom(size))
    with tmpfs(data / "writeback", "20m"), Deployment.open(data, pool_config=_spooled_config(tmp_path)) as dep:
        assert dep.spool is not None
        gate = Gate(dep.spool.inner)
        dep.spool.inner = gate  # offline: nothing drains, the spool disk fills
        dep.add_source("h1")
        backup_and_snapshot(dep, "h1", str(first), "one")
        with pytest.raises(NoSpace):
            backup_and_snapshot(dep, "h1", str(second), "two")
        assert [s.name for s in dep.list_snapshots()] == ["one"]
        gate.open.set()  # online again: the spool drains, the disk has room
        assert dep.spool.wait_drained(WAIT)
        backup_and_snapshot(dep, "h1", str(second), "two")
        for name, tree in (("one", first), ("two", second)):
            restore(dep.snapshot("h1", name), b"", str(tmp_path / "out" / name))
            assert rsync_differences(tree, tmp_path / "out" / name) == []
