"""The appliance's WebDAV share at /dav: the same accounts, and each user sees and changes what their roles allow."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.test import Client

from appliance import server
from appliance.app import create_app
from appliance.services import Services
from engine.deployment import Deployment

PASSWORD = "correct horse"


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Client]:
    with Deployment.open(tmp_path / "data") as dep:
        services = Services.build(dep)
        accounts = services.accounts
        accounts.add_group("g1")
        for name, admin in (("root", True), ("ops", False), ("mia", False)):
            accounts.add_user(name, PASSWORD, admin=admin)
        accounts.set_role("g1", "ops", "operator")
        accounts.set_role("g1", "mia", "member")
        for source in ("a", "b", "c"):
            dep.add_source(source)
        accounts.assign_source("a", "g1", None)
        accounts.assign_source("b", "g1", "mia")
        yield Client(server._dispatch(create_app(services), server._dav(services)))


def _as(name: str, **headers: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{PASSWORD}".encode()).decode(), **headers}


def _listed(client: Client, name: str) -> set[str]:
    reply = client.open("/dav/", method="PROPFIND", headers=_as(name, Depth="1"))
    assert reply.status_code == 207
    return set(re.findall(r"<D:href>/dav/([^/<]+)/</D:href>", reply.get_data(as_text=True)))


def test_each_user_sees_and_changes_what_their_roles_allow(share: Client) -> None:
    assert _listed(share, "root") == {"a", "b", "c"}
    assert _listed(share, "ops") == {"a", "b"}
    assert _listed(share, "mia") == {"b"}
    inside = share.open("/dav/a/", method="PROPFIND", headers=_as("ops", Depth="1")).get_data(as_text=True)
    assert {"current", "snapshots", "images"} <= set(re.findall(r"<D:href>/dav/a/([^/<]+)/</D:href>", inside))
    put = {"input_stream": __import__("io").BytesIO(b"data"), "method": "PUT"}
    assert share.open("/dav/a/current/f", headers=_as("ops"), **put).status_code in (201, 204)
    assert share.open("/dav/c/current/f", headers=_as("ops"), data=b"x", method="PUT").status_code == 404
    assert share.open("/dav/b/current/g", headers=_as("mia"), data=b"x", method="PUT").status_code == 403
    assert share.open("/dav/b/current/", headers=_as("mia", Depth="1"), method="PROPFIND").status_code == 207
    assert share.open("/dav/a/current/", headers=_as("mia", Depth="1"), method="PROPFIND").status_code == 404
    move = _as("ops", Destination="http://localhost/dav/c/current/f")
    assert share.open("/dav/a/current/f", headers=move, method="MOVE").status_code == 404
    assert share.open("/dav/new/", headers=_as("ops"), method="MKCOL").status_code == 403
    assert share.open("/dav/new/", headers=_as("root"), method="MKCOL").status_code == 201
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ops:nope").decode(), "Depth": "0"}
    assert share.open("/dav/", headers=wrong, method="PROPFIND").status_code == 401


def test_a_percent_in_a_source_name_is_not_decoded_twice(tmp_path: Path) -> None:
    """PATH_INFO arrives decoded: `a%2541` names `a%41` (no source may be named so), not `aA` that the user may see."""
    with Deployment.open(tmp_path / "data") as dep:
        services = Services.build(dep)
        services.accounts.add_group("g1")
        services.accounts.add_user("mia", PASSWORD)
        services.accounts.set_role("g1", "mia", "operator")
        dep.add_source("aA")
        services.accounts.assign_source("aA", "g1", None)
        share = Client(server._dispatch(create_app(services), server._dav(services)))
        assert _listed(share, "mia") == {"aA"}
        assert share.open("/dav/aA/", method="PROPFIND", headers=_as("mia", Depth="1")).status_code == 207
        assert share.open("/dav/a%2541/", method="PROPFIND", headers=_as("mia", Depth="1")).status_code == 404
        share.open("/dav/aA/current/f", headers=_as("mia"), data=b"x", method="PUT")
        into = _as("mia", Destination="http://localhost/dav/a%2541/current/f")
        assert share.open("/dav/aA/current/f", headers=into, method="COPY").status_code == 404
        back = _as("mia", Destination="http://localhost/dav/a%41/current/g")  # %41 is A: source aA, allowed
        assert share.open("/dav/aA/current/f", headers=back, method="COPY").status_code in (201, 204)


def test_a_folder_opened_in_a_browser_says_how_to_connect_and_lists_its_names(share: Client) -> None:
    """A GET of a folder is a browser's: a plain page with the address to connect to, never the library's hint."""
    odd = "%3Cb%3E%26x%20%C3%A9"  # markup, a space and an accent in a name: escaped, and its link leads to it
    put = share.open(f"/dav/a/current/{odd}", headers=_as("ops"), data=b"x", method="PUT")
    assert put.status_code in (201, 204)
    page = share.get("/dav/", headers=_as("ops"))
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "Map network drive" in text and "http://localhost/dav/" in text and 'href="/"' in text
    assert re.findall(r'<li><a href="(/dav/[^"]*)">', text) == ["/dav/a/", "/dav/b/"]  # what ops may see
    assert "not enabled" not in text and "dir_browser" not in text
    inside = share.get("/dav/a/current/", headers=_as("ops")).get_data(as_text=True)
    assert "&lt;b&gt;&amp;x é" in inside and "<b>" not in inside
    link = re.findall(r'<li><a href="(/dav/a/current/[^"]+)">', inside)
    assert link == [f"/dav/a/current/{odd}"]
    assert share.get(link[0], headers=_as("ops")).get_data() == b"x"
    assert share.head("/dav/a/", headers=_as("ops")).status_code == 200
    assert share.get("/dav/c/", headers=_as("ops")).status_code == 404  # what one may not see, as before
    assert share.get("/dav/", headers=_as("ops")).headers["Content-Security-Policy"] == "default-src 'none'; sandbox"


def test_in_maintenance_a_write_is_503_with_retry_after(tmp_path: Path) -> None:
    with Deployment.open(tmp_path / "data") as dep:
        services = Services.build(dep)
        services.accounts.add_user("root", PASSWORD, admin=True)
        dep.add_source("a")
        share = Client(server._dispatch(create_app(services), server._dav(services)))
        dep.set_maintenance("disk swap")
        put = share.open("/dav/a/current/f", headers=_as("root"), data=b"x", method="PUT")
        assert put.status_code == 503 and put.headers["Retry-After"] == "60"
        assert "disk swap" in put.get_data(as_text=True) or "maintenance" in put.get_data(as_text=True)
        assert (
            share.open("/dav/a/", method="PROPFIND", headers=_as("root", Depth="1")).status_code == 207
        )  # reads go on
        dep.set_maintenance(None)
        assert share.open("/dav/a/current/f", headers=_as("root"), data=b"x", method="PUT").status_code in (201, 204)
