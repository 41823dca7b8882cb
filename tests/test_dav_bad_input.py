"""Bad input to the WebDAV share: the right status, nothing written half-way, and the share keeps serving."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from .davshare import PASSWORD, USER, Share, basic, share
from .test_faults import tmpfs


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Share]:
    """One share for the module: each case must leave it serving, which the next case relies on."""
    with share(tmp_path_factory.mktemp("dav") / "data") as s:
        yield s


@pytest.fixture
def dav(running: Share) -> Iterator[Share]:
    assert running.request("PUT", "/h1/current/keep", b"kept").status in (201, 204)
    yield running
    # Whatever happened, the share still answers, and nothing was damaged.
    assert running.request("GET", "/h1/current/keep").body == b"kept"


def raw(s: Share, head: str, body: bytes = b"", *, answer: bool = True) -> bytes:
    """Send bytes as they are (http.client would fix them); read the reply, or hang up at once."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        if not answer:
            return b""
        out = b""
        while b"\r\n\r\n" not in out:
            piece = sock.recv(65536)
            if not piece:
                break
            out += piece
        return out


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


AUTH = f"Authorization: {basic(USER, PASSWORD)}"


@pytest.mark.parametrize(
    "path",
    ["/h1/current/../../etc/passwd", "/h1/current/%2e%2e/%2e%2e/x", "/h1/current/a%2fb", "/h1/current/a%2Fb",
     "/h1/current/.%2E/keep", "/h1/current/./keep", "/h1/current/a%00b", "/h1/current/%2e"],
)  # fmt: skip
def test_path_traversal_is_refused(dav: Share, path: str) -> None:
    assert status(raw(dav, f"PROPFIND {path} HTTP/1.1\nHost: x\n{AUTH}\nDepth: 0\n")) == 400
    assert status(raw(dav, f"PUT {path} HTTP/1.1\nHost: x\n{AUTH}\nContent-Length: 1\n", b"x")) == 400


def test_destinations_elsewhere_are_refused(dav: Share) -> None:
    for dest, code in [
        ("http://evil.example/h1/current/x", 502),
        ("http://127.0.0.1:1/../../x", 400),
        (f"{dav.url}/h1/current/../../h1/snapshots/x", 400),
        (f"{dav.url}/h1/snapshots/x", 403),
        (f"{dav.url}/h2/current/x", 409),
    ]:
        r = dav.request("COPY", "/h1/current/keep", headers={"Destination": dest})
        assert r.status == code, (dest, r.status, r.body)
        r = dav.request("MOVE", "/h1/current/keep", headers={"Destination": dest})
        assert r.status == code, (dest, r.status, r.body)


def test_overlong_and_invalid_names(dav: Share) -> None:
    long = "n" * 256
    assert dav.request("PUT", f"/h1/current/{long}", b"x").status == 400
    assert dav.request("MKCOL", f"/h1/current/{long}").status == 400
    assert dav.request("PUT", "/h1/current/" + quote("é" * 128), b"x").status == 400  # 256 bytes of UTF-8
    assert dav.request("PUT", "/h1/current/" + "n" * 255, b"x").status == 201
    assert dav.request("PUT", "/h1/current/missing/dir/f", b"x").status == 409


@pytest.mark.parametrize("method", ["PROPFIND", "PROPPATCH", "LOCK"])
@pytest.mark.parametrize("body", [b"<D:propfind xmlns:D='DAV:'><D:allprop>", b"\xff\xfe<x/>", b"<a><b></a>"])
def test_malformed_xml_is_a_400(dav: Share, method: str, body: bytes) -> None:
    for path in ("/h1/current/", "/h1/current/keep"):
        r = dav.request(method, path, body, {"Depth": "0" if method != "PROPFIND" else "1"})
        assert r.status == 400, (method, path, r.status)


def test_entities_are_not_expanded(dav: Share) -> None:
    body = b"""<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><t xmlns="urn:t">&x;</t></D:prop></D:set></D:propertyupdate>"""
    dav.request("PROPPATCH", "/h1/current/keep", body)
    assert b"root:" not in dav.request("PROPFIND", "/h1/current/keep", headers={"Depth": "0"}).body


def test_depth_infinity_is_refused_with_the_standard_error(dav: Share) -> None:
    for headers in ({"Depth": "infinity"}, {}):
        r = dav.request("PROPFIND", "/h1/current/", headers=headers)
        assert r.status == 403
        assert b"propfind-finite-depth" in r.body


def test_an_upload_larger_than_free_space_is_refused_unread(dav: Share) -> None:
    reply = raw(dav, f"PUT /h1/current/keep HTTP/1.1\nHost: x\n{AUTH}\nContent-Length: {10**15}\n", b"x" * 4096)
    assert status(reply) == 507
    assert b"connection: close" in reply.lower()  # the body is left unread, not swallowed into memory
    big_xml = raw(dav, f"PROPFIND /h1/current/ HTTP/1.1\nHost: x\n{AUTH}\nContent-Length: {10**12}\nDepth: 1\n")
    assert status(big_xml) == 413


def wait_uploads_done(s: Share) -> None:
    """Wait until no nameless file is left: the server has finished with the cut request."""
    tree = s.view.dep.working_tree("h1")
    for _ in range(600):
        with tree.lock:
            if all(inode.parents or ino == 1 for ino, inode in tree.inodes.items()):
                return
        time.sleep(0.05)
    raise AssertionError("an upload's nameless file was never dropped")


@pytest.mark.parametrize("chunked", [False, True])
def test_a_client_that_disconnects_mid_put_leaves_nothing(dav: Share, chunked: bool) -> None:
    for target in ("new", "keep"):
        framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 50000000"
        body = (b"800000\r\n" if chunked else b"") + b"y" * 3_000_000
        raw(dav, f"PUT /h1/current/{target} HTTP/1.1\nHost: x\n{AUTH}\n{framing}\n", body, answer=False)
        wait_uploads_done(dav)
        assert dav.request("HEAD", "/h1/current/new").status == 404
        assert dav.request("GET", "/h1/current/keep").body == b"kept"
    listing = dav.request("PROPFIND", "/h1/current/", headers={"Depth": "1"}).body
    assert b".cairn-put" not in listing


def test_a_body_shorter_than_its_length_is_not_stored(dav: Share) -> None:
    with socket.create_connection(("127.0.0.1", dav.port), timeout=30) as sock:
        sock.sendall(f"PUT /h1/current/keep HTTP/1.1\r\nHost: x\r\n{AUTH}\r\nContent-Length: 100\r\n\r\n".encode())
        sock.sendall(b"z" * 10)
        sock.shutdown(socket.SHUT_WR)  # the client says it is done after 10 of 100 bytes
        reply = sock.recv(65536)
    assert reply == b"" or status(reply) == 400
    wait_uploads_done(dav)


def test_authentication_is_required(dav: Share) -> None:
    assert dav.request("GET", "/h1/current/keep", auth=False).status == 401
    wrong = {"Authorization": basic(USER, "wrong")}
    assert dav.request("GET", "/h1/current/keep", headers=wrong).status == 401
    assert dav.request("PUT", "/h1/current/keep", b"evil", headers=wrong).status == 401
    unknown = {"Authorization": basic("mallory", PASSWORD)}
    assert dav.request("PROPFIND", "/", headers={**unknown, "Depth": "1"}).status == 401
    reply = raw(dav, f"PUT /h1/current/keep HTTP/1.1\nHost: x\nContent-Length: {10**12}\n", b"x" * 1000)
    assert status(reply) == 401


def test_anonymous_access_when_asked_for(tmp_path: Path) -> None:
    with share(tmp_path / "data", anonymous=True) as s:
        assert s.request("PUT", "/h1/current/f", b"hi", auth=False).status == 201
        assert s.request("GET", "/h1/current/f", auth=False).body == b"hi"


def test_a_disk_that_fills_mid_put_is_a_507_and_loses_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "48m") as mnt, share(mnt / "data") as s:
        assert s.request("PUT", "/h1/current/keep", b"kept").status == 201
        assert s.put_streamed("/h1/current/big", 200) == 507  # no length: the disk fills on the way
        assert s.request("HEAD", "/h1/current/big").status == 404
        assert s.request("GET", "/h1/current/keep").body == b"kept"
        subprocess.run(["mount", "-o", "remount,size=512m", str(mnt)], check=True)  # space comes back
        s.dep.blobs.flush()  # what the background commit does every half second: the failed pack is stored
        assert s.request("PUT", "/h1/current/after", b"x" * 1000).status == 201
        assert s.request("GET", "/h1/current/after").body == b"x" * 1000


def test_names_that_only_look_like_traversal_are_names(dav: Share) -> None:
    for name in ("a%255c..%255cb", "..%5c..%5cwin.ini", "...", "a%252fb"):
        assert dav.request("PUT", f"/h1/current/{name}", name.encode()).status == 201, name
        assert dav.request("GET", f"/h1/current/{name}").body == name.encode()
        assert dav.request("DELETE", f"/h1/current/{name}").status == 204
