"""A backup reads small files (bytes and xattrs) ahead of its walk: what it records is what the files hold."""

from __future__ import annotations

import os
from pathlib import Path

from engine import walkreads
from engine.backup import backup
from engine.deployment import Deployment
from engine.reader import SnapshotView, TreeCache
from engine.walkreads import ReadAhead


def _files(root: Path, n: int, size: int) -> list[tuple[bytes, int, int]]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = root / f"f{i:03}"
        p.write_bytes(bytes([i % 251]) * size)
        out.append((os.fsencode(p), size, os.getuid()))
    return out


def test_a_window_gives_each_file_its_bytes_and_xattrs_within_the_limit(tmp_path: Path) -> None:
    files = _files(tmp_path, 50, 100)
    os.setxattr(files[7][0], "user.tag", b"seven")
    ahead = ReadAhead(open_max=2)
    window = ahead.directory(files)
    assert len(window._open) == 2
    for i, (path, _, _) in enumerate(files):
        got = window.take(path)
        assert got is not None and got.data == bytes([i % 251]) * 100
        assert got.xattrs == ({b"user.tag": b"seven"} if i == 7 else {})
        assert len(window._open) <= 2
    window.close()
    assert ahead.free == 2


def test_a_file_gone_before_its_read_is_left_to_the_walk_and_the_files_are_closed(tmp_path: Path) -> None:
    files = _files(tmp_path, 5, 10)
    os.unlink(files[0][0])
    before = sorted(os.listdir("/proc/self/fd"))
    ahead = ReadAhead()
    window = ahead.directory(files)
    assert window.take(files[0][0]) is None  # the walk reads it again and reports what it finds
    assert window.take(b"/not/asked/for") is None
    assert window.take(files[1][0]) is not None
    window.close()  # three files never taken: linked or skipped by the walk
    assert ahead.free == walkreads.OPEN_MAX
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_a_backup_of_more_files_than_its_window_and_limit_records_each(
    deployment: Deployment, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(walkreads, "OPEN_MAX", 40)  # the parent's window holds most while a subdirectory is walked
    src = tmp_path / "src"
    for i in range(walkreads.WINDOW * 3):
        (src / "d").mkdir(parents=True, exist_ok=True)
        (src / "d" / f"a{i:03}").write_bytes(b"file %d " % i * (i + 1))
        if i % 40 == 0:
            sub = src / "d" / f"a{i:03}-sub"
            sub.mkdir()
            for j in range(60):
                (sub / f"s{j}").write_bytes(b"sub %d/%d" % (i, j) * 30)
    os.setxattr(src / "d" / "a050", "user.k", b"v")
    (src / "d" / "a051").write_bytes(b"")
    deployment.add_source("s")
    backup(deployment.working_tree("s"), deployment.blobs, src)
    view = SnapshotView(TreeCache(deployment.blobs), deployment.create_snapshot("s").root)
    seen = 0
    for path in sorted(src.rglob("*")):
        if path.is_file():
            rel = os.fsencode(path.relative_to(src))
            assert view.read(rel) == path.read_bytes(), rel
            seen += 1
    assert seen == walkreads.WINDOW * 3 + 3 * 60
    assert dict(view.lookup(b"d/a050").xattrs) == {b"user.k": b"v"}
