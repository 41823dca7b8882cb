"""Access rules beside the matrix: write-only secrets, one rule for adding and removing sources, hostile JSON,
the pages' security headers, and the remote CLI's token staying with its appliance."""

from __future__ import annotations

import html
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.cli.client import Client, RemoteError
from appliance.config import Config

from .appliance_world import World, world

SECRET = "smtp-secret-8d1f"


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[World]:
    with world(tmp_path) as w:
        yield w


def test_secrets_are_write_only(appliance: World) -> None:
    w = appliance
    root, mia = w.headers("admin"), w.headers("owner")
    client = w.app.test_client()
    smtp = {"host": "mail.example.org", "user": "cairn", "password": SECRET}
    # a marker where no password is stored is a clear error
    marker = {"key": "smtp", "value": {**smtp, "password": {"set": True}}}
    reply = client.put("/api/v1/config", json=marker, headers=root)
    assert reply.status_code == 400 and "no smtp.password is stored" in reply.json["error"]  # type: ignore[index]
    put = client.put("/api/v1/config", json={"key": "smtp", "value": smtp}, headers=root)
    assert put.status_code == 200 and SECRET not in put.get_data(as_text=True)
    for who in ("admin", "owner", "member_other"):
        shown = client.get("/api/v1/config", headers=w.headers(who))
        assert shown.json["smtp"]["value"]["password"] == {"set": True}, who  # type: ignore[index]
        assert SECRET not in shown.get_data(as_text=True)
        assert SECRET not in client.get("/settings", headers=w.headers(who)).get_data(as_text=True)
    assert SECRET not in client.get("/api/v1/sources/b/config", headers=mia).get_data(as_text=True)
    assert SECRET not in client.get("/api/v1/config?source=b", headers=mia).get_data(as_text=True)
    # what was shown, written back with a change, keeps the password
    kept = {**smtp, "host": "mail2.example.org", "password": {"set": True}}
    assert client.put("/api/v1/config", json={"key": "smtp", "value": kept}, headers=root).status_code == 200
    assert Config(w.dep.catalog).value("smtp") == {**smtp, "host": "mail2.example.org"}
    # The settings page's SMTP form: the password field is empty and says one is stored; leaving it empty keeps it.
    page = client.get("/settings", headers=root).get_data(as_text=True)
    assert "stored: empty keeps it" in page and SECRET not in page
    form = {"key": "smtp", "host": "mail3.example.org", "port": "587", "user": "cairn", "keep_password": "1"}
    assert client.post("/settings", data=form, headers=root).status_code == 302
    assert Config(w.dep.catalog).value("smtp") == {**smtp, "host": "mail3.example.org", "port": 587}
    # the mail server is the whole appliance's: a group cannot have its own; a password is a string
    at_group = {"key": "smtp", "value": smtp, "group": "g1"}
    reply = client.put("/api/v1/config", json=at_group, headers=root)
    assert reply.status_code == 400 and "whole appliance" in reply.json["error"]  # type: ignore[index]
    wrong = {"key": "smtp", "value": {**smtp, "password": 7}}
    assert client.put("/api/v1/config", json=wrong, headers=root).status_code == 400
    assert Config(w.dep.catalog).value("smtp")["password"] == SECRET


def test_group_settings_are_for_its_members(appliance: World) -> None:
    w = appliance
    client = w.app.test_client()
    Config(w.dep.catalog).set("notify_email", "g1-team@example.org", group="g1")
    assert client.get("/api/v1/config?group=g1", headers=w.headers("member_other")).status_code == 404
    assert client.get("/api/v1/config?group=g1", headers=w.headers("other_admin")).status_code == 404
    assert client.get("/settings?at=group:g1", headers=w.headers("member_other")).status_code == 404
    mine = client.get("/api/v1/config?group=g1", headers=w.headers("owner"))
    assert mine.json["notify_email"]["value"] == "g1-team@example.org"  # type: ignore[index]


def test_adding_and_removing_a_source_is_one_rule(appliance: World) -> None:
    """Group administrators and global administrators add and remove a group's sources; operators neither."""
    w = appliance
    client = w.app.test_client()
    ops, boss = w.headers("operator"), w.headers("group_admin")
    assert client.post("/api/v1/sources", json={"name": "x1", "group": "g1"}, headers=ops).status_code == 403
    assert client.post("/api/v1/sources", json={"name": "x1", "group": "g1"}, headers=boss).status_code == 201
    assert client.delete("/api/v1/sources/x1", headers=ops).status_code == 403
    assert "x1" in w.services.accounts.source_access()
    assert client.delete("/api/v1/sources/x1", headers=boss).status_code == 200
    # a bad owner or group is refused before anything is made
    reply = client.post("/api/v1/sources", json={"name": "x2", "group": "g1", "owner": "ghost"}, headers=boss)
    assert reply.status_code == 404 and "x2" not in w.services.accounts.source_access()
    root = w.headers("admin")
    assert client.post("/api/v1/sources", json={"name": "x3", "group": "nope"}, headers=root).status_code == 404
    assert "x3" not in w.services.accounts.source_access()


@pytest.mark.parametrize("depth", [33, 100_000])
def test_deeply_nested_json_is_a_clear_400(appliance: World, depth: int) -> None:
    w = appliance
    client = w.app.test_client()
    nested = "[" * depth + "]" * depth
    raw = '{"key": "retention", "value": ' + nested + "}"
    reply = client.put("/api/v1/config", data=raw, content_type="application/json", headers=w.headers("admin"))
    assert reply.status_code == 400 and "nested at most 32 levels" in reply.json["error"]  # type: ignore[index]
    form = {"key": "retention", "daily": nested}  # the page's typed fields: a number or a clear error
    page = client.post("/settings", data=form, headers=w.headers("admin"), follow_redirects=True)
    assert page.status_code == 200 and "retention daily is a number" in html.unescape(page.get_data(as_text=True))


def test_pages_and_api_answers_carry_the_security_headers(appliance: World) -> None:
    w = appliance
    client = w.app.test_client()
    root = w.headers("admin")
    replies = [client.get("/login"), client.get("/"), client.get("/static/forms.js"), client.get("/api/v1/me"),
               client.get("/settings", headers=root), client.get("/sources/zz", headers=root),
               client.get("/api/v1/sources", headers=root)]  # fmt: skip
    for reply in replies:
        csp = reply.headers.get("Content-Security-Policy", "")
        for directive in ("default-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'",
                          "form-action 'self'"):  # fmt: skip
            assert directive in csp, (reply.request.path, csp)
        assert "unsafe-inline" not in csp
        assert reply.headers.get("X-Content-Type-Options") == "nosniff"
        assert reply.headers.get("Referrer-Policy") == "same-origin"
        reply.close()


def test_templates_hold_no_inline_script() -> None:
    """The policy refuses inline script: every script is a static file, every handler set from one."""
    for template in (Path(__file__).parent.parent / "appliance" / "web" / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template.name
        assert not re.search(r"\son[a-z]+\s*=", text), template.name
        assert "javascript:" not in text, template.name


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET as the server was told (a redirect, or JSON) and records the requests' headers."""

    seen: list[dict[str, str]]
    location: str | None

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        if self.location:
            self.send_response(302)
            self.send_header("Location", self.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps([]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(location: str | None) -> tuple[http.server.ThreadingHTTPServer, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen, "location": location})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_the_remote_cli_never_carries_its_token_through_a_redirect() -> None:
    elsewhere, seen_elsewhere = _serve(None)
    target = f"http://127.0.0.1:{elsewhere.server_address[1]}/api/v1/sources"
    appliance, seen_here = _serve(target)
    try:
        client = Client(f"http://127.0.0.1:{appliance.server_address[1]}", "cairn_secret_token")
        with pytest.raises(RemoteError, match="redirect"):
            client.call("GET", "/sources")
        assert seen_here and seen_here[0]["Authorization"] == "Bearer cairn_secret_token"
        assert not any("Authorization" in h for h in seen_elsewhere), seen_elsewhere
        assert not seen_elsewhere  # not followed at all
    finally:
        for server in (appliance, elsewhere):
            server.shutdown()
            server.server_close()
