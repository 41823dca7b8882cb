"""The pool alone is enough: catalog rebuild; and damage is found and located."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from engine.check import CHECKSUMMING
from engine.deployment import Deployment
from engine.hostmounts import filesystem_of
from engine.packs import pack_key

from .test_backup_restore import cairn, cairn_json
from .trees import make_tree, rsync_differences


def _manifest(data: Path) -> dict[str, object]:
    """Every snapshot's every entry and file content, as the read API sees them."""
    out: dict[str, object] = {}
    with Deployment.open(data) as dep:
        for info in dep.list_snapshots():
            view = dep.snapshot(info.source, info.name)
            entries = {}
            for path, e in view.walk():
                content = view.read(path) if e.kind == 1 else e.payload
                entries[path] = (e.kind, e.mode, e.uid, e.gid, e.size, e.mtime_ns, e.nlink, e.xattrs, content)
            out[f"{info.source}/{info.name}"] = (info.uuid, info.root, info.files, info.bytes, entries)
    return out


def test_catalog_rebuild_from_the_pool_alone(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    make_tree(src)
    cairn(data, "backup", "h1", str(src), "--snapshot", "one")
    (src / "size-100").write_bytes(b"second version")
    cairn(data, "backup", "h1", str(src), "--snapshot", "two")
    cairn(data, "backup", "h2", str(src / "odd"), "--snapshot", "only")
    before = _manifest(data)
    for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm"):
        (data / name).unlink(missing_ok=True)

    report = cairn_json(data, "catalog", "rebuild")
    assert isinstance(report, dict) and report["problems"] == []
    assert (report["sources"], report["snapshots"]) == (2, 3)
    assert _manifest(data) == before
    cairn(data, "restore", "h1", "two", str(tmp_path / "out"))
    assert rsync_differences(src, tmp_path / "out") == []

    # The working tree was seeded from the latest snapshot: nothing new is stored.
    pool_before = sum(f.stat().st_size for f in (data / "pool" / "packs").rglob("*"))
    cairn(data, "backup", "h1", str(src), "--snapshot", "three")
    pool_after = sum(f.stat().st_size for f in (data / "pool" / "packs").rglob("*"))
    assert pool_after - pool_before < 64 << 10
    assert cairn_json(data, "snapshot", "diff", "h1", "two", "three") == []


def test_rebuild_refuses_to_overwrite_a_catalog(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cairn(data, "source", "add", "h1")
    proc = cairn(data, "catalog", "rebuild", check=False)
    assert proc.returncode == 1 and "--force" in proc.stderr
    cairn(data, "catalog", "rebuild", "--force")
    assert (data / "catalog.db.old").exists()


def _corrupt_blob_of(data: Path, source: str, snapshot: str, path: bytes) -> None:
    with Deployment.open(data) as dep:
        view = dep.snapshot(source, snapshot)
        blob_id = view.reader(view.lookup(path)).extents[0][0]
        loc = dep.blobs.locate(blob_id)
    pack = data / "pool" / pack_key(loc.pack)
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 0xFF
    os.chmod(pack, 0o644)
    pack.write_bytes(bytes(raw))


def test_damaged_blob_is_found_and_located(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    make_tree(src)
    shutil.copy(src / "size-65537", src / "copy-of-65537")
    cairn(data, "backup", "h1", str(src), "--snapshot", "one")
    cairn(data, "backup", "h2", str(src), "--snapshot", "other")
    _corrupt_blob_of(data, "h1", "one", b"size-65537")

    proc = cairn(data, "pool", "scrub", "--json", check=False)
    assert proc.returncode == 3
    report = json.loads(proc.stdout)
    assert not report["ok"]
    damaged = [d for d in report["damage"] if d["blob"]]
    assert len(damaged) == 1
    affects = {(a["source"], a["snapshot"], a["path"]) for a in damaged[0]["affects"]}
    assert affects == {
        ("h1", "one", "/size-65537"), ("h1", "one", "/copy-of-65537"),
        ("h2", "other", "/size-65537"), ("h2", "other", "/copy-of-65537"),
    }  # fmt: skip

    restored = cairn(data, "restore", "h1", "one", str(tmp_path / "out"), check=False)
    assert restored.returncode == 3
    assert "h1 @ one: size-65537" in restored.stderr and "hash check" in restored.stderr
    assert (tmp_path / "out" / "size-9000000").read_bytes() == (src / "size-9000000").read_bytes()
    single = cairn(data, "restore", "h1", "one", "size-65537", str(tmp_path / "f"), check=False)
    assert single.returncode == 1 and "h1 @ one: size-65537" in single.stderr
    assert "Traceback" not in single.stderr


def test_pool_check_is_connectivity_and_scrub_is_recorded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 5000)
    cairn(data, "backup", "h1", str(src))
    check = json.loads(cairn(data, "pool", "check", "--json").stdout)
    assert check["ok"] and check["last_scrub"] is None
    scrub = json.loads(cairn(data, "pool", "scrub", "--json").stdout)
    assert scrub["ok"] and scrub["packs"] >= 1 and scrub["filesystem"] == filesystem_of(data)
    recorded = json.loads(cairn(data, "pool", "check", "--json").stdout)["last_scrub"]
    assert recorded["packs"] == scrub["packs"] and recorded["damaged"] == 0
    (data / "pool").rename(tmp_path / "moved")
    gone = cairn(data, "pool", "check", check=False)
    assert gone.returncode == 1 and "cairn-pool.json is missing" in gone.stderr


def test_filesystem_of_a_pool(tmp_path: Path) -> None:
    from .test_faults import tmpfs

    (tmp_path / "m").mkdir()
    with tmpfs(tmp_path / "m", "1m") as m:
        (m / "pool").mkdir()
        assert filesystem_of(m / "pool") == "tmpfs"
    assert CHECKSUMMING["btrfs"] and CHECKSUMMING["zfs"]
