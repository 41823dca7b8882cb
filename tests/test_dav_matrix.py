"""Who may do what on the appliance's share at /dav: every method, every kind of user, an own and a foreign source.

The table below is the rule, written out. Each cell is the status a request
gets in source s1 (held by group g1, owned by mia) and in s2 (held by g2, no
owner), run against `cairn serve`. A new method, role or Destination trick
that the share answers differently fails here.
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.accounts import Accounts
from engine.deployment import Deployment

from .davshare import Reply
from .served import Served, served

PASSWORD = "correct horse"
SOURCES = {"s1": ("g1", "mia"), "s2": ("g2", None)}  # source: (group, owner)
ROLES = {"mia": ("g1", "member"), "max": ("g2", "member"), "ops": ("g1", "operator"),
         "gad": ("g1", "admin"), "oad": ("g2", "admin")}  # fmt: skip
USERS = ["anon", "mia", "max", "ops", "gad", "oad", "root"]

# Columns: anonymous, member owning s1, member of g2, operator of g1, admin of g1, admin of g2, global admin;
# in each, the status in s1 and then in s2.
TABLE = """
                         anon     mia      max      ops      gad      oad      root
GET                      401 401  200 404  404 404  200 404  200 404  404 200  200 200
PROPFIND                 401 401  207 404  404 404  207 404  207 404  404 207  207 207
PUT                      401 401  403 404  404 404  201 404  201 404  404 201  201 201
DELETE                   401 401  403 404  404 404  204 404  204 404  404 204  204 204
MKCOL                    401 401  403 404  404 404  201 404  201 404  404 201  201 201
PROPPATCH                401 401  403 404  404 404  207 404  207 404  404 207  207 207
LOCK                     401 401  403 404  404 404  200 404  200 404  404 200  200 200
UNLOCK-others-lock       401 401  403 404  404 404  204 404  204 404  404 204  204 204
COPY                     401 401  403 404  404 404  201 404  201 404  404 201  201 201
COPY-encoded             401 401  403 404  404 404  201 404  201 404  404 201  201 201
COPY-http%3A             401 401  403 404  404 404  201 404  201 404  404 201  201 201
COPY-foreign             401 401  404 404  404 404  404 404  404 404  404 404  201 201
COPY-encoded-foreign     401 401  404 404  404 404  404 404  404 404  404 404  201 201
COPY-http%3A-foreign     401 401  404 404  404 404  404 404  404 404  404 404  201 201
MOVE                     401 401  403 404  404 404  201 404  201 404  404 201  201 201
MOVE-encoded             401 401  403 404  404 404  201 404  201 404  404 201  201 201
MOVE-http%3A             401 401  403 404  404 404  201 404  201 404  404 201  201 201
MOVE-foreign             401 401  403 404  404 404  404 404  404 404  404 404  201 201
MOVE-http%3A-foreign     401 401  403 404  404 404  404 404  404 404  404 404  201 201
MKCOL-source             401 401  403 403  403 403  403 403  403 403  403 403  201 201
DELETE-source            401 401  403 403  403 403  403 403  204 403  403 204  204 204
"""


LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
             b"<D:locktype><D:write/></D:locktype></D:lockinfo>")  # fmt: skip


def expected() -> dict[tuple[str, str, str], int]:
    """(row, user, source) -> status, read from TABLE."""
    lines = [line.split() for line in TABLE.strip().splitlines()]
    assert lines[0] == USERS
    out = {}
    for row, *cells in lines[1:]:
        assert len(cells) == 2 * len(USERS), row
        for i, user in enumerate(USERS):
            out[(row, user, "s1")], out[(row, user, "s2")] = int(cells[2 * i]), int(cells[2 * i + 1])
    return out


@dataclass
class Appliance:
    served: Served

    @property
    def port(self) -> int:
        return int(self.served.url.rsplit(":", 1)[1])

    def request(self, user: str, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes = b"") -> Reply:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            sent = dict(headers or {})
            if user != "anon":
                sent["Authorization"] = "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
            conn.request(method, path, body=body, headers=sent)
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def put(self, path: str) -> None:
        assert self.request("root", "PUT", path, body=b"<html><script>alert(1)</script>").status in (201, 204)

    def lock(self, user: str, path: str, depth: str = "0") -> Reply:
        return self.request(user, "LOCK", path, {"Timeout": "Second-60", "Depth": depth}, LOCK_BODY)


def prepare(data: Path) -> None:
    """Users, groups and sources, written before the appliance starts."""
    with Deployment.open(data) as dep:
        accounts = Accounts(dep.catalog)
        for group in ("g1", "g2"):
            accounts.add_group(group)
        accounts.add_user("root", PASSWORD, admin=True)
        for name, (group, role) in ROLES.items():
            accounts.add_user(name, PASSWORD)
            accounts.set_role(group, name, role)
        for source, (group, owner) in SOURCES.items():
            dep.add_source(source)
            accounts.assign_source(source, group, owner)
            for user in USERS:  # one for each user to try to remove
                dep.add_source(f"gone-{user}-{source}")
                accounts.assign_source(f"gone-{user}-{source}", group, None)
        dep.add_source("locked")  # for a lock on all of current/, away from the table's locks
        accounts.assign_source("locked", "g1", None)


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    tmp = tmp_path_factory.mktemp("matrix")
    prepare(tmp / "data")
    with served(tmp / "data", tmp / "serve.log") as s:
        app = Appliance(s)
        for source in SOURCES:
            app.put(f"/dav/{source}/current/f")
        yield app


def encoded(source: str) -> str:
    return "".join(f"%{b:02X}" for b in source.encode())


Request = tuple[str, str, dict[str, str]]  # method, path, headers
Row = Callable[[Appliance, str, str, str], Request]  # (appliance, user, source, other source) -> request


def _dest(method: str, how: str, foreign: bool) -> Row:
    """A COPY or MOVE from `src` into `src` (or into the other source), the Destination spelled `how`."""

    def row(app: Appliance, user: str, src: str, other: str) -> Request:
        into = other if foreign else src
        name = f"{method.lower()}-{how}-{'f' if foreign else 'o'}-{user}"
        path = f"/dav/{src}/current/f"
        if method == "MOVE":
            path = f"/dav/{src}/current/{name}-from"
            app.put(path)
        spelled = {
            "plain": f"http://127.0.0.1:{app.port}/dav/{into}/current/{name}",
            "encoded": f"http://127.0.0.1:{app.port}/dav/{encoded(into)}/current/{name}",
            "http%3A": f"http%3A//127.0.0.1:{app.port}/dav/{into}/current/{name}",
        }[how]
        return method, path, {"Destination": spelled}

    return row


def _simple(method: str, name: str, *, made: bool = False, headers: dict[str, str] | None = None) -> Row:
    def row(app: Appliance, user: str, src: str, other: str) -> Request:
        path = f"/dav/{src}/current/{name.format(user=user)}"
        if made:
            app.put(path)
        return method, path, headers or {}

    return row


PROPPATCH_BODY = b"""<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>
<t:note xmlns:t="urn:cairn-test">x</t:note></D:prop></D:set></D:propertyupdate>"""


def _unlock_others(app: Appliance, user: str, src: str, other: str) -> Request:
    path = f"/dav/{src}/current/unlock-{user}"
    app.put(path)
    held = app.lock("root", path)
    assert held.status == 200
    return "UNLOCK", path, {"Lock-Token": held.headers["lock-token"]}


def _lock(app: Appliance, user: str, src: str, other: str) -> Request:
    path = f"/dav/{src}/current/lock-{user}"
    app.put(path)
    return "LOCK", path, {"Timeout": "Second-60", "Depth": "0"}


ROWS: dict[str, Row] = {
    "GET": _simple("GET", "f"),
    "PROPFIND": lambda app, user, src, other: ("PROPFIND", f"/dav/{src}/current/", {"Depth": "1"}),
    "PUT": _simple("PUT", "put-{user}"),
    "DELETE": _simple("DELETE", "delete-{user}", made=True),
    "MKCOL": _simple("MKCOL", "mkcol-{user}"),
    "PROPPATCH": _simple("PROPPATCH", "f"),
    "LOCK": _lock,
    "UNLOCK-others-lock": _unlock_others,
    **{
        f"{method}{'-' + how if how != 'plain' else ''}{'-foreign' if foreign else ''}": _dest(method, how, foreign)
        for method in ("COPY", "MOVE")
        for how in ("plain", "encoded", "http%3A")
        for foreign in (False, True)
    },
    "MKCOL-source": lambda app, user, src, other: ("MKCOL", f"/dav/new-{user}-{src}/", {}),
    "DELETE-source": lambda app, user, src, other: ("DELETE", f"/dav/gone-{user}-{src}/", {}),
}
BODIES = {"PROPPATCH": PROPPATCH_BODY, "PUT": b"x"}


@pytest.mark.parametrize("user", USERS)
def test_each_user_gets_what_the_table_says(appliance: Appliance, user: str) -> None:
    want = expected()
    rows = {row for row, _, _ in want}
    assert rows <= set(ROWS), rows - set(ROWS)
    wrong = []
    for row in sorted(rows):
        for src, other in (("s1", "s2"), ("s2", "s1")):
            method, path, headers = ROWS[row](appliance, user, src, other)
            body = LOCK_BODY if method == "LOCK" else BODIES.get(method, b"")
            got = appliance.request(user, method, path, headers, body).status
            if got != want[(row, user, src)]:
                wrong.append(f"{row} in {src}: {got}, not {want[(row, user, src)]}")
    assert not wrong, "\n".join(wrong)


def test_an_administrator_breaks_an_operators_lock_on_current(appliance: Appliance) -> None:
    """A lock on a whole current/ stops every backup into it, until someone who may configure the source lifts it."""
    held = appliance.lock("ops", "/dav/locked/current/", depth="infinity")
    assert held.status == 200
    token = held.headers["lock-token"]
    try:
        assert appliance.request("gad", "PUT", "/dav/locked/current/blocked", body=b"x").status == 423
        for user, refused in (("mia", 404), ("oad", 404), ("max", 404)):
            assert appliance.request(user, "UNLOCK", "/dav/locked/current/", {"Lock-Token": token}).status == refused
        # The administrator finds the token where any client would: in the lock discovery property.
        asked = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/></D:prop></D:propfind>'
        found = appliance.request("gad", "PROPFIND", "/dav/locked/current/", {"Depth": "0"}, asked)
        assert token.strip("<>").encode() in found.body
        assert appliance.request("gad", "UNLOCK", "/dav/locked/current/", {"Lock-Token": token}).status == 204
        assert appliance.request("gad", "PUT", "/dav/locked/current/blocked", body=b"x").status == 201
    finally:
        appliance.request("root", "UNLOCK", "/dav/locked/current/", {"Lock-Token": token})
