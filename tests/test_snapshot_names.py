"""Names the mount gives a meaning of its own are refused as snapshot names, however a snapshot is taken."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import snapshots
from engine.deployment import Deployment
from engine.errors import InvalidName
from engine.mount import MountView
from engine.mount.nodes import LATEST_NAME, ROOT

from .test_backup_restore import cairn


@pytest.mark.parametrize("name", ["latest", "Latest", "LATEST"])
def test_the_engine_refuses_a_reserved_snapshot_name(sqlite_deployment: Deployment, name: str) -> None:
    dep = sqlite_deployment
    dep.add_source("h1")
    with pytest.raises(InvalidName, match="reserved"):
        dep.create_snapshot("h1", name)
    assert dep.list_snapshots("h1") == []
    dep.create_snapshot("h1", "latest-but-one")  # only the name itself is reserved


def test_mkdir_in_snapshots_refuses_latest_and_the_listing_stays_whole(sqlite_deployment: Deployment) -> None:
    dep = sqlite_deployment
    dep.add_source("h1")
    view = MountView(dep)
    snapshots = view.lookup(view.lookup(ROOT, b"h1").ino, b"snapshots").ino
    with pytest.raises(InvalidName, match="reserved"):
        view.mkdir(snapshots, LATEST_NAME, 0o755)
    view.mkdir(snapshots, b"one", 0o755)
    assert [name for name, _ in view.listdir(snapshots)] == [b"latest", b"one"]
    assert view.readlink(view.lookup(snapshots, LATEST_NAME).ino) == b"one"


def test_a_snapshot_named_latest_by_an_older_version_leaves_the_listing_whole(
    sqlite_deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = sqlite_deployment
    dep.add_source("h1")
    with monkeypatch.context() as older:
        older.setattr(snapshots, "check_name", lambda name: name)
        dep.create_snapshot("h1", "latest")
    dep.create_snapshot("h1", "one")
    view = MountView(dep)
    snapshots_dir = view.lookup(view.lookup(ROOT, b"h1").ino, b"snapshots").ino
    assert [name for name, _ in view.listdir(snapshots_dir)] == [b"latest", b"one"]
    assert view.readlink(view.lookup(snapshots_dir, LATEST_NAME).ino) == b"one"
    assert [s.name for s in dep.list_snapshots("h1")] == ["latest", "one"]


def test_the_cli_refuses_a_reserved_snapshot_name(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("x")
    cairn(data, "backup", "h1", str(src))
    for args in (["snapshot", "create", "h1", "latest"], ["backup", "h1", str(src), "--snapshot", "latest"]):
        refused = cairn(data, *args, check=False)
        assert refused.returncode == 1 and "reserved" in refused.stderr, refused.stderr
    assert "latest" not in cairn(data, "snapshot", "list", "h1").stdout
