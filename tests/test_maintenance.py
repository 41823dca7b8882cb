"""Maintenance mode: read-only for every process sharing the catalog, and back."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from engine.deployment import Deployment
from engine.errors import InUse, ReadOnly

from .test_backup_restore import cairn, cairn_json
from .test_mount import Mounted


def test_engine_refuses_writes_in_maintenance(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("kept")
    data = tmp_path / "data"
    cairn(data, "backup", "h1", str(src), "--snapshot", "one")
    assert cairn_json(data, "maintenance", "on", "--reason", "disk swap") == {
        "maintenance": {"reason": "disk swap", "since": pytest.approx(time.time(), abs=60)}
    }
    refused = cairn(data, "backup", "h1", str(src), check=False)
    assert refused.returncode == 1 and "maintenance mode (disk swap)" in refused.stderr
    cairn(data, "restore", "h1", "one", str(tmp_path / "out"))  # reads go on
    assert (tmp_path / "out" / "f").read_text() == "kept"
    with Deployment.open(data) as dep:
        for attempt in (lambda: dep.add_source("h2"), lambda: dep.create_snapshot("h1", "two"),
                        lambda: dep.delete_snapshot("h1", "one")):  # fmt: skip
            with pytest.raises(ReadOnly):
                attempt()
    assert "disk swap" in cairn(data, "maintenance", "status").stdout
    cairn(data, "maintenance", "off")
    cairn(data, "backup", "h1", str(src), "--snapshot", "two")


def test_a_running_mount_turns_read_only_before_the_command_returns(tmp_path: Path) -> None:
    m = Mounted(tmp_path / "data", tmp_path / "mnt", tmp_path / "mount.log")
    m.path.mkdir()
    m.start()
    try:
        os.mkdir(m.path / "h1")
        (m.path / "h1" / "current" / "before").write_text("written before")
        cairn(m.data, "maintenance", "on", "--reason", "upgrade")
        for write in (lambda: (m.path / "h1" / "current" / "during").touch(),
                      lambda: (m.path / "h1" / "current" / "before").write_text("overwritten")):  # fmt: skip
            with pytest.raises(OSError) as refused:
                write()
            assert refused.value.errno == errno.EROFS
        assert (m.path / "h1" / "current" / "before").read_text() == "written before"
        cairn(m.data, "maintenance", "off")
        (m.path / "h1" / "current" / "after").write_text("back")  # at once, too
        os.mkdir(m.path / "h1" / "snapshots" / "s")
        assert (m.path / "h1" / "snapshots" / "s" / "after").read_text() == "back"
    finally:
        m.stop()
    m.assert_clean_log()


def test_maintenance_on_names_a_writer_that_does_not_follow_it(tmp_path: Path) -> None:
    """A command holding a working tree (a running backup) does not follow the flag: `on` says so, naming it."""
    writer = Deployment.open(tmp_path / "data")
    try:
        writer.add_source("h1")
        writer.working_tree("h1")
        with Deployment.open(tmp_path / "data") as admin:
            with pytest.raises(InUse, match=f"{writer.owner} did not follow it"):
                admin.set_maintenance("upgrade", wait=0.2)
            assert admin.maintenance is not None and admin.maintenance["reason"] == "upgrade"
    finally:
        writer.close()
    with Deployment.open(tmp_path / "data") as admin:
        admin.set_maintenance("upgrade")  # the writer has gone: nobody to wait for
        admin.set_maintenance(None)
