"""A restore from an appliance over its API brings back what a local restore does, but hard links, sockets
and holes."""

from __future__ import annotations

import json
from pathlib import Path

from .served import remote_cli, served
from .test_backup_restore import cairn
from .trees import make_tree, rsync_differences


def test_a_remote_restore_keeps_modes_owners_times_links_devices_and_xattrs(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    make_tree(src)
    cairn(data, "backup", "h1", str(src), "--snapshot", "one")
    with served(data, tmp_path / "serve.log") as server:
        remote = remote_cli(tmp_path, server)
        out = tmp_path / "out"
        done = remote("restore", "h1", "one", str(out), "--json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["damaged"] == [] and doc["errors"] == [] and doc["files"] >= 30
        # Not carried by a tar from the appliance: hard links (each name is a file of its own) and sockets.
        assert sorted(rsync_differences(src, out)) == [
            "cS+++++++++ socket", "hf          hard-b => hard-a", "hf          odd/hard-c => hard-a",
        ]  # fmt: skip
        assert (out / "hard-b").read_bytes() == b"hard linked"
