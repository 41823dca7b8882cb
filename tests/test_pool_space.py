"""Free space is asked of the pool's local directory wherever it sits in the filter stack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.deployment import Deployment
from engine.mount import MountView

FILTERS = {
    "ratelimit": {"requests": {"put": [1000, 1]}},
    "retry": {"attempts": 2},
    "verify": {},
    "spool": {},
    "cache": {},
}


@pytest.mark.parametrize(
    "filters", [{}, {"verify": {}}, {"cache": {}}, FILTERS], ids=["none", "verify", "cache", "all"]
)
def test_a_local_pool_reports_its_free_space_through_any_filters(tmp_path: Path, filters: dict[str, object]) -> None:
    """A tmpfs of 64 MiB holds the pool, so the free space is known to the block and nothing else changes it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.system(f"mount -t tmpfs -o size=64m tmpfs {disk}") != 0:
        pytest.fail("mounting a tmpfs needs root; run the suite as root")
    try:
        config = {"kind": "local", "path": str(disk / "pool"), "filters": filters}
        with Deployment.open(tmp_path / "data", pool_config=config) as dep:
            if dep.spool is not None:
                dep.spool.wait_drained()  # the pool's files written: nothing changes the free space below
            fs = os.statvfs(disk)
            assert dep.free_bytes() == fs.f_bavail * fs.f_frsize > 0
            statfs = MountView(dep).statfs()
            assert statfs["free"] == fs.f_bavail * fs.f_frsize // 4096
    finally:
        os.system(f"umount {disk}")
