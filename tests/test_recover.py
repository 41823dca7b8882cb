"""Restoring a snapshot path into current/ by reference: contents, metadata, merging and replacing."""

from __future__ import annotations

from pathlib import Path

from engine.backup import backup_and_snapshot
from engine.deployment import Deployment
from engine.recover import restore_into
from engine.restore import restore

from .trees import make_tree, rsync_differences


def test_a_directory_comes_back_whole_and_shares_its_chunks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    with Deployment.open(tmp_path / "data") as dep:
        dep.add_source("h1")
        backup_and_snapshot(dep, "h1", str(src), "one")
        tree = dep.working_tree("h1")
        stored = dep.pool_usage()["stored_bytes"]
        # current/ loses everything
        empty = tmp_path / "empty"
        empty.mkdir()
        backup_and_snapshot(dep, "h1", str(empty), "wiped")
        stats = restore_into(dep.snapshot("h1", "one"), b"/", tree, b"/restored")
        assert stats.files >= 30 and stats.bytes > 1 << 20
        dep.create_snapshot("h1", "after")
        out = tmp_path / "out"
        restore(dep.snapshot("h1", "after"), b"/restored", str(out))
        # Hard links come back as separate files: compare everything else.
        assert [d for d in rsync_differences(src, out) if "hard-" not in d] == []
        assert dep.pool_usage()["stored_bytes"] - stored < 64 << 10  # trees only: no content stored again
        # Restoring again over what is there replaces files and merges directories.
        again = restore_into(dep.snapshot("h1", "one"), b"/", tree, b"/restored")
        assert again.files == stats.files
