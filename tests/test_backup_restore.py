"""`cairn backup` and `cairn restore` through the CLI: everything rsync -aHAXS carries comes back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .trees import make_tree, rsync_differences

CAIRN = [sys.executable, "-c", "from appliance.cli import main; main()"]


def cairn(data: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CAIRN, "--data", str(data), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"cairn {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def cairn_json(data: Path, *args: str) -> object:
    return json.loads(cairn(data, *args, "--json").stdout)


def test_backup_restore_roundtrip(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    make_tree(src)
    first = cairn_json(data, "backup", "h1", str(src), "--snapshot", "one")
    assert isinstance(first, dict) and first["errors"] == [] and first["changed"] > 30
    cairn(data, "restore", "h1", "one", str(tmp_path / "out"))
    assert rsync_differences(src, tmp_path / "out") == []
    assert os.stat(tmp_path / "out" / "sparse").st_blocks * 512 < (1 << 20) * 4
    assert os.stat(tmp_path / "out" / "hard-a").st_ino == os.stat(tmp_path / "out" / "odd" / "hard-c").st_ino

    again = cairn_json(data, "backup", "h1", str(src), "--snapshot", "two")
    assert isinstance(again, dict) and again["changed"] == 0 and again["bytes_read"] == 0
    assert cairn_json(data, "snapshot", "diff", "h1", "one", "two") == []

    # Change the tree; the old snapshot keeps the old state.
    shutil.copytree(src, tmp_path / "src-one", symlinks=True, ignore_dangling_symlinks=True, copy_function=_noop)
    (src / "size-100").write_bytes(b"changed")
    os.unlink(src / "hard-b")
    os.chmod(src / "private", 0o640)
    os.setxattr(src / "xattrs", "user.comment", b"new")
    shutil.rmtree(src / "deep")
    cairn(data, "backup", "h1", str(src), "--snapshot", "three")
    changes = cairn_json(data, "snapshot", "diff", "h1", "two", "three")
    assert isinstance(changes, list)
    paths = {(c["change"], c["path"]) for c in changes}
    assert {("modified", "size-100"), ("removed", "hard-b"), ("modified", "private"), ("removed", "deep")} <= paths
    cairn(data, "restore", "h1", "three", str(tmp_path / "out3"))
    assert rsync_differences(src, tmp_path / "out3") == []
    shutil.rmtree(tmp_path / "out")
    cairn(data, "restore", "h1", "one", str(tmp_path / "out"))
    assert (tmp_path / "out" / "size-100").stat().st_size == 100
    assert (tmp_path / "out" / "deep").is_dir()

    check = cairn_json(data, "pool", "scrub")
    assert isinstance(check, dict) and check["ok"] and check["blobs"] > 10


def _noop(src: str, dst: str) -> None:
    """copytree's copy function for a tree of names only."""


def test_restore_a_single_path(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    make_tree(src)
    cairn(data, "backup", "h1", str(src), "--snapshot", "s")
    cairn(data, "restore", "h1", "s", "odd", str(tmp_path / "only-odd"))
    assert rsync_differences(src / "odd", tmp_path / "only-odd") == []
    cairn(data, "restore", "h1", "s", "size-65537", str(tmp_path / "one-file"))
    assert (tmp_path / "one-file").read_bytes() == (src / "size-65537").read_bytes()


def test_cli_lists_and_errors(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("hello")
    cairn(data, "source", "add", "h1")
    dup = cairn(data, "source", "add", "h1", check=False)
    assert dup.returncode == 1 and "exists" in dup.stderr and "Traceback" not in dup.stderr
    cairn(data, "backup", "h1", str(src), "--snapshot", "s")
    sources = cairn_json(data, "source", "list")
    assert isinstance(sources, list) and sources[0]["name"] == "h1" and sources[0]["snapshots"] == 1
    shown = cairn_json(data, "snapshot", "show", "h1", "s", "d")
    assert isinstance(shown, dict) and [e["path"] for e in shown["entries"]] == ["f"]
    assert "h1" in cairn(data, "source", "list").stdout
    missing = cairn(data, "snapshot", "show", "h1", "nope", check=False)
    assert missing.returncode == 1 and "no snapshot" in missing.stderr
    busy = cairn(data, "source", "remove", "h1", check=False)
    assert busy.returncode == 1 and "has snapshots" in busy.stderr
    cairn(data, "snapshot", "delete", "h1", "s")
    cairn(data, "source", "remove", "h1")
    assert cairn_json(data, "snapshot", "list") == []


def test_unreadable_directory_is_reported_and_the_rest_backed_up(tmp_path: Path) -> None:
    """Root without CAP_DAC_OVERRIDE cannot read a mode-000 directory, as any user could not."""
    src, data = tmp_path / "src", tmp_path / "data"
    (src / "locked").mkdir(parents=True)
    (src / "ok").write_text("fine")
    (src / "locked" / "inner").write_text("x")
    os.chmod(src / "locked", 0o000)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    result = subprocess.run(
        [*drop, *CAIRN, "--data", str(data), "backup", "h1", str(src), "--json"], capture_output=True, text=True
    )
    os.chmod(src / "locked", 0o755)
    assert result.returncode == 3, result.stderr
    doc = json.loads(result.stdout)
    assert any("locked" in e and "Permission denied" in e for e in doc["errors"])
    assert doc["files"] == 1
    cairn(data, "restore", "h1", doc["snapshot"]["name"], "ok", str(tmp_path / "ok"))
    assert (tmp_path / "ok").read_text() == "fine"


def test_pool_list_and_compression_level(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    src.mkdir()
    (src / "text").write_bytes(b"".join(b"line %d of a compressible file\n" % i for i in range(200_000)))
    cairn(data, "pool", "configure", "--zstd-level", "1")
    cairn(data, "backup", "h1", str(src), "--snapshot", "fast")
    fast = cairn_json(data, "pool", "list")
    assert isinstance(fast, list) and fast[0]["zstd_level"] == 1
    (src / "text").write_bytes(b"".join(b"LINE %d of a compressible file\n" % i for i in range(200_000)))
    cairn(data, "pool", "configure", "--zstd-level", "19")
    cairn(data, "backup", "h1", str(src), "--snapshot", "small")
    small = cairn_json(data, "pool", "list")
    assert isinstance(small, list)
    added = small[0]["stored_bytes"] - fast[0]["stored_bytes"]
    assert added < fast[0]["stored_bytes"] * 0.95  # level 19 packs the same kind of text smaller
    cairn(data, "pool", "configure", "--never-compress", "jpeg,png", "--no-probe")
    shown = cairn(data, "pool", "configure", "--zstd-level", "3").stdout
    assert "never compressed: jpeg, png; probe False" in shown
    bad = cairn(data, "pool", "configure", "--never-compress", "bogus", check=False)
    assert bad.returncode == 1 and "unknown formats bogus" in bad.stderr
    assert small[0]["ratio"] > 5
    assert cairn(data, "pool", "configure", "--zstd-level", "30", check=False).returncode == 2
    cairn(data, "restore", "h1", "fast", str(tmp_path / "out"))
    assert (tmp_path / "out" / "text").read_bytes().startswith(b"line 0 of")
