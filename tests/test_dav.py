"""The WebDAV share driven by stock clients: litmus, rclone and curl, against the real server."""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from engine.mount import paths

from .davshare import PASSWORD, USER, Share, share

RCLONE = Path(sys.executable).parent / "rclone"


@pytest.fixture
def dav(tmp_path: Path) -> Iterator[Share]:
    with share(tmp_path / "data") as s:
        yield s


def put(s: Share, path: str, data: bytes, **headers: str) -> None:
    r = s.request("PUT", path, data, headers)
    assert r.status in (201, 204), (r.status, r.body)


def test_litmus_passes_every_suite(dav: Share, tmp_path: Path) -> None:
    run = subprocess.run(  # in tmp_path: litmus writes debug.log and child.log where it runs
        ["litmus", f"{dav.url}/h1/current/", USER, PASSWORD], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    summaries = re.findall(r"summary for `(\w+)': of (\d+) tests run: (\d+) passed", run.stdout)
    assert {name for name, _, _ in summaries} == {"basic", "copymove", "props", "locks", "http"}, run.stdout
    for name, ran, passed in summaries:
        assert ran == passed, f"litmus {name}: {passed}/{ran}\n{run.stdout}"
    assert "WARNING" not in run.stdout, run.stdout
    assert run.returncode == 0


def make_tree(root: Path) -> dict[str, bytes]:
    rnd = random.Random(7)
    files: dict[str, bytes] = {}
    for i in range(120):
        files[f"d{i % 6}/sub{i % 3}/f{i:03}.bin"] = rnd.randbytes(rnd.randrange(0, 40_000))
    files["big.bin"] = rnd.randbytes(6 << 20)  # several chunks
    files["empty"] = b""
    files["naïve name ü.txt"] = b"unicode\n"
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (1_600_000_000 + len(data), 1_600_000_000 + len(data)))
    return files


def rclone(*args: str, tmp: Path) -> None:
    env = {**os.environ, "RCLONE_CONFIG": str(tmp / "rclone.conf")}
    (tmp / "rclone.conf").touch()
    subprocess.run([str(RCLONE), *args, "--retries", "1", "-q"], check=True, env=env, timeout=300)


def remote(s: Share, tmp: Path) -> str:
    obscured = subprocess.run(
        [str(RCLONE), "obscure", PASSWORD],
        check=True,
        capture_output=True,
        text=True,
        env={"RCLONE_CONFIG": "/dev/null"},
    ).stdout.strip()
    return f":webdav,url='{s.url}/h1/current',user={USER},pass={obscured},vendor=owncloud,pacer_min_sleep=0:"


def test_rclone_copies_a_tree_in_and_back_out(dav: Share, tmp_path: Path) -> None:
    src, back = tmp_path / "src", tmp_path / "back"
    files = make_tree(src)
    rclone("copy", str(src), remote(dav, tmp_path) + "tree", tmp=tmp_path)
    rclone("copy", remote(dav, tmp_path) + "tree", str(back), tmp=tmp_path)
    got = {str(p.relative_to(back)): p.read_bytes() for p in back.rglob("*") if p.is_file()}
    assert got == files
    for rel in files:  # times came through X-OC-Mtime
        assert (back / rel).stat().st_mtime == (src / rel).stat().st_mtime
    # The same tree is what the mount shows, and a snapshot keeps it.
    assert dav.request("MKCOL", "/h1/snapshots/s1").status == 201
    assert dav.request("GET", "/h1/snapshots/s1/tree/big.bin").body == files["big.bin"]


def curl(*args: str) -> bytes:
    return subprocess.run(
        ["curl", "-sS", "-f", "-u", f"{USER}:{PASSWORD}", *args], check=True, capture_output=True
    ).stdout


def test_curl_range_head_and_tags_stable_across_restarts(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 << 20)
    with share(tmp_path / "data") as s:
        put(s, "/h1/current/f.bin", data)
        url = f"{s.url}/h1/current/f.bin"
        assert curl("-r", "1000-1999", url) == data[1000:2000]
        assert curl("-r", f"{len(data) - 10}-", url) == data[-10:]
        head = s.request("HEAD", "/h1/current/f.bin")
        assert head.status == 200 and head.headers["content-length"] == str(len(data)) and head.body == b""
        tag, modified = head.headers["etag"], head.headers["last-modified"]
        r = s.request("GET", "/h1/current/f.bin", headers={"If-None-Match": tag})
        assert r.status == 304
    with share(tmp_path / "data") as s:
        again = s.request("HEAD", "/h1/current/f.bin")
        assert (again.headers["etag"], again.headers["last-modified"]) == (tag, modified)
        put(s, "/h1/current/g.bin", data)  # same content, same tag
        assert s.request("HEAD", "/h1/current/g.bin").headers["etag"] == tag
        put(s, "/h1/current/f.bin", data[:-1])
        assert s.request("HEAD", "/h1/current/f.bin").headers["etag"] != tag


def fill(s: Share) -> dict[str, bytes]:
    files = {"top/a.txt": b"alpha\n", "top/sub/b.bin": random.Random(3).randbytes(2 << 20), "top/sub/empty": b""}
    for d in ("/h1/current/top", "/h1/current/top/sub"):
        assert s.request("MKCOL", d).status == 201
    for rel, data in files.items():
        put(s, f"/h1/current/{rel}", data)
    stats = paths.resolve(s.view, [b"h1", b"current", b"top"])
    s.view.symlink(stats[-1].ino, b"link", b"sub/b.bin")
    return files


@pytest.mark.parametrize("fmt", ["zip", "tar.zst"])
def test_curl_downloads_a_directory_as_an_archive(dav: Share, fmt: str) -> None:
    files = fill(dav)
    assert dav.request("MKCOL", "/h1/snapshots/s1").status == 201
    blob = curl(f"{dav.url}/h1/snapshots/s1/top?format={fmt}")
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            got = {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
        link = got.pop("top/link")
    else:
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
        with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
            members = tf.getmembers()
            got = {m.name: tf.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]
            link = next(m.linkname for m in members if m.issym()).encode()
    assert got == files
    assert link == b"sub/b.bin"
    assert dav.request("GET", "/h1/current/top?format=rar").status == 400


def test_snapshots_are_taken_by_mkcol_and_read_only(dav: Share) -> None:
    put(dav, "/h1/current/f", b"one")
    assert dav.request("MKCOL", "/h1/snapshots/monday").status == 201
    put(dav, "/h1/current/f", b"two")
    assert dav.request("GET", "/h1/snapshots/monday/f").body == b"one"
    assert dav.request("GET", "/h1/snapshots/latest/f").body == b"one"
    for method, path in [
        ("PUT", "/h1/snapshots/monday/f"), ("PUT", "/h1/snapshots/monday/new"), ("DELETE", "/h1/snapshots/monday/f"),
        ("DELETE", "/h1/snapshots/monday"), ("MKCOL", "/h1/snapshots/monday/d"), ("DELETE", "/h1/current"),
        ("PUT", "/h1/f"),
    ]:  # fmt: skip
        assert dav.request(method, path, b"x" if method == "PUT" else b"").status == 403, (method, path)
    assert dav.request("DELETE", "/h1").status == 409  # a source with snapshots is not removed
    move = dav.request("MOVE", "/h1/snapshots/monday/f", headers={"Destination": f"{dav.url}/h1/current/g"})
    assert move.status == 403
    patch = b'<propertyupdate xmlns="DAV:"><set><prop><x xmlns="urn:t">1</x></prop></set></propertyupdate>'
    assert dav.request("PROPPATCH", "/h1/snapshots/monday/f", patch).status == 207
    assert b"403" in dav.request("PROPPATCH", "/h1/snapshots/monday/f", patch).body
    # COPY out of a snapshot is a restore: by chunk ids, into current/.
    copy = dav.request("COPY", "/h1/snapshots/monday/f", headers={"Destination": f"{dav.url}/h1/current/restored"})
    assert copy.status == 201
    assert dav.request("GET", "/h1/current/restored").body == b"one"
    assert dav.request("GET", "/h1/snapshots/monday/f").body == b"one"


PROPPATCH = b"""<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:" xmlns:t="urn:test">
<D:set><D:prop><t:colour>teal</t:colour>
<Z:Win32LastModifiedTime>Wed, 01 Jan 2020 00:00:00 GMT</Z:Win32LastModifiedTime></D:prop></D:set>
</D:propertyupdate>"""
PROPFIND = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'


def test_dead_properties_and_times_persist(tmp_path: Path) -> None:
    with share(tmp_path / "data") as s:
        put(s, "/h1/current/f", b"data", **{"X-OC-Mtime": "1500000000"})
        assert s.request("HEAD", "/h1/current/f").headers["last-modified"] == "Fri, 14 Jul 2017 02:40:00 GMT"
        assert s.request("PROPPATCH", "/h1/current/f", PROPPATCH).status == 207
        r = s.request("MOVE", "/h1/current/f", headers={"Destination": f"{s.url}/h1/current/g"})
        assert r.status == 201
        assert s.request("MKCOL", "/h1/snapshots/s1").status == 201
    with share(tmp_path / "data") as s:
        for path in ("/h1/current/g", "/h1/snapshots/s1/g"):
            body = s.request("PROPFIND", path, PROPFIND, {"Depth": "0"}).body
            assert re.search(rb"<(\w+:)?colour[^>]*>teal<", body), body
            assert b"Wed, 01 Jan 2020 00:00:00 GMT" in body


def test_a_large_directory_is_listed_in_a_stream(dav: Share) -> None:
    current = paths.resolve(dav.view, [b"h1", b"current"])[-1]
    names = [f"n{i:05}".encode() for i in range(2500)]
    for name in names:
        dav.view.release(dav.view.create(current.ino, name, 0o644).ino)
    r = dav.request("PROPFIND", "/h1/current/", headers={"Depth": "1"})
    assert r.status == 207
    assert r.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.headers
    hrefs = re.findall(rb"<D:href>([^<]*)</D:href>", r.body)
    assert hrefs == [b"/h1/current/"] + [b"/h1/current/" + n for n in names]
    assert r.body.count(b"<D:getetag>") == 2500
    assert dav.view._entries == {}  # nothing of a snapshot held after a request (none looked up here)


def test_served_under_a_mount_path(tmp_path: Path) -> None:
    with share(tmp_path / "data", mount_path="/dav") as s:
        put(s, "/dav/h1/current/f", b"data")
        r = s.request("MOVE", "/dav/h1/current/f", headers={"Destination": f"{s.url}/dav/h1/current/g"})
        assert r.status == 201
        listing = s.request("PROPFIND", "/dav/h1/current/", headers={"Depth": "1"}).body
        assert re.findall(rb"<D:href>([^<]*)</D:href>", listing) == [b"/dav/h1/current/", b"/dav/h1/current/g"]
        assert s.request("GET", "/dav/h1/current/g").body == b"data"
        assert s.request("GET", "/h1/current/g").status == 404


def test_snapshot_entries_are_forgotten_after_each_request(dav: Share) -> None:
    fill(dav)
    assert dav.request("MKCOL", "/h1/snapshots/s1").status == 201
    assert dav.request("PROPFIND", "/h1/snapshots/s1/top/", headers={"Depth": "1"}).status == 207
    assert dav.request("GET", "/h1/snapshots/s1/top/sub/b.bin").status == 200
    assert dav.request("GET", "/h1/snapshots/s1/top?format=zip").status == 200
    for _ in range(200):  # the server releases a request's entries once the response is closed
        if not dav.view._entries:
            break
        time.sleep(0.05)
    assert dav.view._entries == {}


def test_copy_and_move_within_current_keep_chunks_and_properties(dav: Share) -> None:
    files = fill(dav)
    patch = b'<propertyupdate xmlns="DAV:"><set><prop><t xmlns="urn:t">mark</t></prop></set></propertyupdate>'
    assert dav.request("PROPPATCH", "/h1/current/top/sub/b.bin", patch).status == 207
    r = dav.request("COPY", "/h1/current/top/", headers={"Destination": f"{dav.url}/h1/current/copy/"})
    assert r.status == 201
    for rel, data in files.items():
        assert dav.request("GET", "/h1/current/copy/" + rel.removeprefix("top/")).body == data
    src = paths.resolve(dav.view, [b"h1", b"current", b"top", b"sub", b"b.bin"])[-1]
    dst = paths.resolve(dav.view, [b"h1", b"current", b"copy", b"sub", b"b.bin"])[-1]
    assert src.ino != dst.ino
    assert paths.extents(dav.view, src.ino) == paths.extents(dav.view, dst.ino)  # by chunk ids, not re-read
    assert b"mark" in dav.request("PROPFIND", "/h1/current/copy/sub/b.bin", headers={"Depth": "0"}).body
    r = dav.request("MOVE", "/h1/current/copy/", headers={"Destination": f"{dav.url}/h1/current/moved/"})
    assert r.status == 201
    moved = paths.resolve(dav.view, [b"h1", b"current", b"moved", b"sub", b"b.bin"])[-1]
    assert moved.ino == dst.ino  # a rename: the same node
    assert dav.request("PROPFIND", "/h1/current/copy/", headers={"Depth": "0"}).status == 404
    r = dav.request("DELETE", "/h1/current/moved/")
    assert r.status == 204
    assert dav.request("GET", "/h1/current/top/sub/b.bin").body == files["top/sub/b.bin"]
