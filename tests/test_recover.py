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


def test_cli_restores_in_place_to_a_new_location_and_another_source(tmp_path: Path) -> None:
    from .test_backup_restore import cairn, cairn_json

    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("alpha\n")
    data = tmp_path / "data"
    cairn(data, "backup", "h1", str(src), "--snapshot", "s1")
    cairn(data, "source", "add", "h2")
    doc = cairn_json(data, "restore", "h1", "s1", "docs", "--in-place", "--to", "/old/docs", "--into", "h2")
    assert doc == {"restored": "docs", "to": "h2/current/old/docs", "files": 1, "bytes": 6}
    cairn(data, "snapshot", "create", "h2", "then")  # what the restore put in current/ was committed
    out = tmp_path / "out"
    cairn(data, "restore", "h2", "then", "old/docs/a.txt", str(out))
    assert out.read_text() == "alpha\n"
    bad = cairn(data, "restore", "h1", "s1", "docs", str(out), "--in-place", check=False)
    assert bad.returncode == 2 and "expected PATH with --in-place" in bad.stderr
    bad = cairn(data, "restore", "h1", "s1", str(out), "--to", "x", check=False)
    assert bad.returncode == 2 and "--in-place" in bad.stderr
