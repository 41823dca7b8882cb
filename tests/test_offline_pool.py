"""An S3 pool behind a write-back spool while the S3 server is down (a real SeaweedFS, killed and restarted).

Commands that do not need the pool work (backup into the spool, listing
snapshots, restoring what the spool holds), a mount starts and serves what
is on local disk, and what is not fails with EIO instead of hanging.
"""

from __future__ import annotations

import errno
import json
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from appliance.cli import main
from engine.backup import backup_and_snapshot
from engine.deployment import Deployment
from engine.pool import POOL_FILE
from engine.storage.filter import find_layer
from engine.storage.s3 import S3Backend
from engine.storage.spool import Spool

from .conftest import new_bucket
from .servers import SeaweedFS, seaweedfs
from .test_mount import Mounted
from .test_read_ahead import eventually

# Short retries: what is under test is that the commands do not need the pool, not how long they would wait.
RETRY = {"attempts": 3, "first_delay": 0.1, "max_delay": 0.5}


def cli(data: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--data", str(data), *args], catch_exceptions=False)


def _tree(root: Path, seed: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    files = {f"d/f{i}": rnd.randbytes(rnd.randrange(1000, 200_000)) for i in range(5)}
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    return files


@contextmanager
def pool_then_outage(tmp_path: Path) -> Iterator[tuple[SeaweedFS, Path, dict[str, bytes]]]:
    """A deployment whose snapshot `one` is stored in S3; then the S3 server is killed."""
    data = tmp_path / "data"
    with seaweedfs() as server:
        config: dict[str, Any] = new_bucket(server, filters={"spool": {}, "retry": RETRY})
        with Deployment.open(data, pool_config=config) as dep:
            dep.add_source("h1")
            one = _tree(tmp_path / "one", 1)
            backup_and_snapshot(dep, "h1", str(tmp_path / "one"), "one")
            spool = find_layer(dep.backend, Spool)
            assert spool is not None and spool.wait_drained(60)
        server.kill()
        yield server, data, one


def _files_below(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_commands_that_do_not_need_the_pool_work_while_it_is_down(tmp_path: Path) -> None:
    with pool_then_outage(tmp_path) as (server, data, _):
        two = _tree(tmp_path / "two", 2)
        backup = cli(data, "backup", "h1", str(tmp_path / "two"), "--snapshot", "two", "--json")
        assert backup.exit_code == 0, backup.output
        listed = cli(data, "snapshot", "list", "--json")
        assert listed.exit_code == 0, listed.output
        states = {s["name"]: s["state"] for s in json.loads(listed.stdout)}
        assert states == {"one": "stored", "two": "committed"}  # two waits in the spool
        pool = cli(data, "pool", "list", "--json")
        assert pool.exit_code == 0, pool.output
        assert json.loads(pool.stdout)[0]["state"] == "offline"
        restored = cli(data, "restore", "h1", "two", str(tmp_path / "out"))
        assert restored.exit_code == 0, restored.output  # from the spool
        assert _files_below(tmp_path / "out") == two

        server.start()  # back: the spool drains into the pool it was checked to be, and two is stored
        with Deployment.open(data) as dep:
            spool = find_layer(dep.backend, Spool)
            assert spool is not None and spool.wait_drained(60)
            dep.mark_stored()
            assert {s.name: s.state for s in dep.list_snapshots()} == {"one": "stored", "two": "stored"}


@pytest.mark.slow
def test_a_mount_serves_what_the_spool_holds_and_fails_the_rest_with_eio(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with seaweedfs() as server:
        config: dict[str, Any] = new_bucket(server, filters={"spool": {}, "retry": RETRY})
        with Deployment.open(data, pool_config=config) as dep:
            dep.add_source("h1")
            _tree(tmp_path / "one", 1)
            backup_and_snapshot(dep, "h1", str(tmp_path / "one"), "one")
            spool = find_layer(dep.backend, Spool)
            assert spool is not None and spool.wait_drained(60)
        m = Mounted(data, tmp_path / "mnt", tmp_path / "mount.log")
        m.path.mkdir()
        m.start()
        try:
            server.kill()
            two = _tree(tmp_path / "two", 2)  # a backup beside the mount: its packs wait in the spool directory
            assert cli(data, "backup", "h1", str(tmp_path / "two"), "--snapshot", "two").exit_code == 0
            snaps = m.path / "h1" / "snapshots"
            for start_again in (False, True):
                if start_again:
                    m.stop()
                    m.start()  # a mount starts while the pool does not answer
                assert _files_below(snaps / "two") == two
                with pytest.raises(OSError) as e:  # stored in the pool only: an error, not a hang
                    (snaps / "one" / "d" / "f0").read_bytes()
                assert e.value.errno == errno.EIO
            m.stop()
        finally:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait()
            subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)


def test_a_pool_opened_offline_is_checked_before_the_spool_writes_to_it(tmp_path: Path) -> None:
    """The bucket answers again, but holds another pool now: nothing is uploaded, and the pool shows why."""
    with pool_then_outage(tmp_path) as (server, data, _):
        with Deployment.open(data) as dep:
            config, uuid = dep.pool_usage()["backend"], dep.pool.uuid
        server.start()
        bucket = S3Backend(_bucket_config(server, config))
        bucket.put(POOL_FILE, bucket.get(POOL_FILE).replace(uuid.encode(), b"00000000-0000-4000-8000-000000000000"))
        packs = set(bucket.list("packs/"))
        server.kill()
        with Deployment.open(data) as dep:  # offline: the check waits for the first upload
            backup_and_snapshot(dep, "h1", str(tmp_path / "one"), "again")
            spool = find_layer(dep.backend, Spool)
            assert spool is not None and spool.backlog()[0] > 0
            server.start()
            assert eventually(lambda: "expects pool" in (spool.last_error or ""), 60), spool.last_error
            assert set(bucket.list("packs/")) == packs and spool.backlog()[0] > 0
            assert dep.pool_state()["state"] == "offline"


def _bucket_config(server: SeaweedFS, described: str) -> dict[str, Any]:
    """The S3 configuration of the bucket a pool's description names (`s3:BUCKET at URL ...`)."""
    return server.config(described.split()[0].removeprefix("s3:"))
