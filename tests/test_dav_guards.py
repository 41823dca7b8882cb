"""The share's guards against hostile requests: Destinations read one way only, safe source names,
files as downloads, paths that are not UTF-8, and locks that neither last for weeks nor outlive an administrator."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dav.scope import Allowed
from engine.deployment import Deployment
from engine.errors import InvalidName, NotFound
from engine.mount import paths

from .davshare import Share, share


def _only(*sources: str) -> Allowed:
    """A user who may do anything in `sources` (and, for the Destination trick, in a source named `http:`)."""
    return lambda source, action: source in sources


@pytest.fixture(scope="module")
def dav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Share]:
    data = tmp_path_factory.mktemp("guards") / "data"
    with share(data, sources=("own", "victim"), mount_path="/dav", scope=lambda user: _only("own", "http:")) as s:
        assert s.request("PUT", "/dav/own/current/f", b"mine").status == 201
        yield s


@pytest.mark.parametrize("method", ["COPY", "MOVE"])
@pytest.mark.parametrize(
    "spelled",
    ["http%3A//{host}/dav/victim/current/{name}", "http%3a%2F%2F{host}/dav/victim/current/{name}",
     "HTTP%3A//{host}/dav/victim/current/{name}", "/dav/victim/current/{name}", "http:/dav/victim/current/{name}",
     "//{host}/dav/victim/current/{name}", "http://{host}/dav/%76ictim/current/{name}",
     "http://{host}/dav/own/..%2F..%2Fvictim/current/{name}", "http://{host}/dav//victim/current/{name}",
     "http://{host}/dav/./victim/current/{name}", "http%3A//{host}/dav/victim/current/{name}?x#y",
     "http://{host}/dav/victim/current/{name};x=y"],
)  # fmt: skip
def test_a_destination_is_read_once_as_wsgidav_reads_it(dav: Share, method: str, spelled: str) -> None:
    """However the Destination is spelled, the source it names is the one the scope checks."""
    name = f"stolen-{method}-{hashlib.sha256(spelled.encode()).hexdigest()[:12]}"
    assert dav.request("PUT", f"/dav/own/current/{name}", b"mine").status == 201
    dest = spelled.format(host=f"127.0.0.1:{dav.port}", name=name)
    reply = dav.request(method, f"/dav/own/current/{name}", headers={"Destination": dest})
    assert reply.status in (400, 404), (dest, reply.status)
    with pytest.raises(NotFound):  # the scope hides victim from the user: look in the engine
        paths.resolve(dav.view, [b"victim", b"current", name.encode()])


def test_a_destination_in_the_own_source_works_however_spelled(dav: Share) -> None:
    host = f"127.0.0.1:{dav.port}"
    for i, dest in enumerate([f"http://{host}/dav/own/current/c0", f"http://{host}/dav/%6Fwn/current/c1",
                              f"http%3A//{host}/dav/own/current/c2", "/dav/own/current/c%33"]):  # fmt: skip
        assert dav.request("COPY", "/dav/own/current/f", headers={"Destination": dest}).status == 201, dest
        assert dav.request("GET", f"/dav/own/current/c{i}").body == b"mine"


def test_a_destination_that_is_not_utf8_is_a_400(dav: Share) -> None:
    dest = f"http://127.0.0.1:{dav.port}/dav/own/current/%FF"
    assert dav.request("COPY", "/dav/own/current/f", headers={"Destination": dest}).status == 400


def test_a_path_that_is_not_utf8_is_a_400(dav: Share) -> None:
    for method in ("GET", "PUT", "PROPFIND", "DELETE"):
        reply = dav.request(method, "/dav/own/current/%FF", b"x" if method == "PUT" else b"", {"Depth": "0"})
        assert reply.status == 400, method
        assert b"UTF-8" in reply.body
    assert dav.request("GET", "/dav/own/current/f").body == b"mine"  # and the share still serves


@pytest.mark.parametrize(
    "name", ["http:", "a/b", "a%41", "a\\b", "a b", "-rf", ".hidden", "a\x01b", "a?b", "a#b", "caf\u00e9", "a;b", ""]
)
def test_source_names_are_plain(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    with Deployment.open(tmp_path_factory.mktemp("names") / "data") as dep:
        with pytest.raises(InvalidName):
            dep.add_source(name)
        assert [s.name for s in dep.list_sources()] == []


def test_plain_source_names_are_taken(tmp_path: Path) -> None:
    with Deployment.open(tmp_path / "data") as dep:
        for name in ("h1", "web-01.example.com", "DB_2", "9lives"):
            dep.add_source(name)
        assert sorted(s.name for s in dep.list_sources()) == sorted(["h1", "web-01.example.com", "DB_2", "9lives"])


def test_a_source_name_with_a_colon_is_refused_over_the_share(tmp_path: Path) -> None:
    with share(tmp_path / "data") as s:
        assert s.request("MKCOL", "/http%3A/").status == 400
        assert s.request("MKCOL", "/a%20b/").status == 400
        assert s.request("MKCOL", "/fine/").status == 201


def test_files_are_downloads_and_nothing_is_sniffed(dav: Share) -> None:
    page = b"<html><script>alert(document.cookie)</script></html>"
    assert dav.request("PUT", "/dav/own/current/page.html", page).status == 201
    for method in ("GET", "HEAD"):
        reply = dav.request(method, "/dav/own/current/page.html")
        assert reply.status == 200
        assert reply.headers["content-disposition"] == "attachment; filename*=UTF-8''page.html"
    svg = "/dav/own/current/" + "%C3%A9t%C3%A9%201.svg"
    assert dav.request("PUT", svg, b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>").status == 201
    named = dav.request("GET", svg).headers["content-disposition"]
    assert named == "attachment; filename*=UTF-8''%C3%A9t%C3%A9%201.svg"
    for method, path in [("GET", "/dav/own/current/page.html"), ("PROPFIND", "/dav/own/current/"),
                         ("GET", "/dav/own/current/missing"), ("GET", "/dav/victim/current/x"),
                         ("GET", "/dav/own/current/%FF"), ("OPTIONS", "/dav/")]:  # fmt: skip
        reply = dav.request(method, path, headers={"Depth": "1"})
        assert reply.headers["x-content-type-options"] == "nosniff", (method, path, reply.status)
        assert "sandbox" in reply.headers["content-security-policy"], (method, path, reply.status)
    assert dav.request("GET", "/dav/own/current/page.html", auth=False).headers["x-content-type-options"] == "nosniff"


LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
             b"<D:locktype><D:write/></D:locktype></D:lockinfo>")  # fmt: skip


def _granted(body: bytes) -> int:
    """The seconds a lock has left, from a LOCK answer's lock discovery."""
    found = re.search(rb"<D:timeout>Second-(\d+)</D:timeout>", body, re.IGNORECASE)
    assert found, body
    return int(found.group(1))


@pytest.mark.parametrize(
    ("asked", "granted"),
    [("Infinite", 3600), ("Second-2419200", 3600), ("Second-3601", 3600), ("Second-60", 60), ("", 3600),
     ("Infinite, Second-4100000000", 3600)],
)  # fmt: skip
def test_a_lock_lasts_at_most_an_hour(dav: Share, asked: str, granted: int) -> None:
    """The answer says the time left, counted down from what was granted: at most `granted`."""
    path = f"/dav/own/current/locked-{hashlib.sha256(asked.encode()).hexdigest()[:12]}"
    assert dav.request("PUT", path, b"x").status == 201
    headers = {"Depth": "0", **({"Timeout": asked} if asked else {})}
    reply = dav.request("LOCK", path, LOCK_BODY, headers)
    assert reply.status == 200
    assert granted // 2 < _granted(reply.body) <= granted
    token = reply.headers["lock-token"]
    refreshed = dav.request("LOCK", path, b"", {"If": f"({token})", "Timeout": "Infinite"})
    assert refreshed.status == 200
    assert 1800 < _granted(refreshed.body) <= 3600
    assert dav.request("UNLOCK", path, headers={"Lock-Token": token}).status == 204
