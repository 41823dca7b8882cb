"""Who may call which operation of /api/v1: every operation of openapi.json, every role, own and foreign resources.

TABLE holds the access rule of every operation, written down by hand (not derived from appliance/access.py,
which is what is under test). An operation in the spec, or a route in the application, without a row in
TABLE fails the suite: a new endpoint needs its rule before it ships.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appliance.doors.keys import generate_pair

from .appliance_world import BYSTANDER, FOREIGN, OWN, PASSWORD, PERSONAS, World, world

ANON = "anonymous"
PEOPLE = (ANON, *PERSONAS)
Who = tuple[frozenset[str], frozenset[str]]  # who may, on the own resource and on the foreign one


def both(*people: str) -> Who:
    return frozenset(people), frozenset(people)


EVERYONE = both(*PEOPLE)
SIGNED_IN = both(*PERSONAS)
ADMIN = both("admin")
SEE = frozenset({"owner", "operator", "group_admin", "admin"}), frozenset({"member_other", "other_admin", "admin"})
RESTORE = SEE  # owning a source gives seeing and restoring it
RUN = frozenset({"operator", "group_admin", "admin"}), frozenset({"other_admin", "admin"})
CONFIGURE = RUN
MANAGE = frozenset({"group_admin", "admin"}), frozenset({"other_admin", "admin"})  # add/remove sources, members
MEMBER = SEE  # in the group at all (the owners are members of their sources' groups)
MINE = frozenset(PERSONAS), frozenset({"admin"})  # jobs: one's own; all of them for administrators
ONLY_MINE = frozenset(PERSONAS), frozenset()  # tokens: nobody touches another's

_fresh = itertools.count()
Fill = dict[str, Any]


@dataclass
class Case:
    """One way to call an operation: who may, the status they get, and the 404s that hide what others may not see."""

    who: Who
    ok: int
    hidden: str = ""  # "source", "group": a 404 for those who may not see it; "mine": a 404 for all refused
    query: str = ""
    body: Callable[[Fill], Any] | None = None
    setup: Callable[[World, str, Fill], Fill] | None = None  # makes what the call uses up (a job, a source)
    params: Fill = field(default_factory=dict)


# -- what the calls use up, made fresh for each call -----------------------------------------------


def _holder(persona: str, side: Fill) -> str:
    """Who holds the job or token: the caller for the own side, the bystander for the foreign side."""
    return PERSONAS[persona][0] if side["side"] == "own" and persona in PERSONAS else BYSTANDER


def queued_job(w: World, persona: str, side: Fill) -> Fill:
    uid = w.services.accounts.user(_holder(persona, side)).id
    job = w.services.jobs.submit("snapshot", {"source": side["source"], "name": None}, user_id=uid)
    return {"job_id": job.id}


def ended_job(w: World, persona: str, side: Fill) -> Fill:
    job_id = queued_job(w, persona, side)["job_id"]
    w.services.jobs.cancel(job_id, "test")
    return {"job_id": job_id}


def token(w: World, persona: str, side: Fill) -> Fill:
    user = w.services.accounts.user(_holder(persona, side))
    w.services.accounts.add_token(user, f"t{next(_fresh)}")
    return {"token_id": w.services.accounts.list_tokens(user)[-1]["id"]}


def doomed_source(w: World, persona: str, side: Fill) -> Fill:
    name = f"gone{next(_fresh)}"
    w.dep.add_source(name)
    w.services.accounts.assign_source(name, side["group"], side["owner"])
    return {"source": name}


def doomed_snapshot(w: World, persona: str, side: Fill) -> Fill:
    name = f"doomed{next(_fresh)}"
    w.dep.create_snapshot(side["source"], name)
    return {"snap": name}


def doomed_user(w: World, persona: str, side: Fill) -> Fill:
    name = f"leaver{next(_fresh)}"
    w.services.accounts.add_user(name, PASSWORD)
    return {"name": name}


def doomed_group(w: World, persona: str, side: Fill) -> Fill:
    name = f"dissolved{next(_fresh)}"
    w.services.accounts.add_group(name)
    return {"group": name}


def doomed_key(w: World, persona: str, side: Fill) -> Fill:
    key = w.services.keys.add(side["source"], generate_pair(f"k{next(_fresh)}")[1])
    return {"key_id": key.id}


def fresh_key(f: Fill) -> Fill:
    return {"key": generate_pair(f"k{next(_fresh)}")[1]}


def fresh(prefix: str) -> Callable[[Fill], Any]:
    return lambda f: {"name": f"{prefix}{next(_fresh)}"}


SNAP = {"snap": "s1"}

# (method, path in openapi.json) -> the ways to call it
TABLE: dict[tuple[str, str], list[Case]] = {
    ("GET", "/api/v1/openapi.json"): [Case(EVERYONE, 200)],
    ("POST", "/api/v1/login"): [Case(EVERYONE, 200, body=lambda f: {"name": BYSTANDER, "password": PASSWORD})],
    ("POST", "/api/v1/logout"): [Case(EVERYONE, 200)],
    ("GET", "/api/v1/me"): [Case(SIGNED_IN, 200)],
    ("POST", "/api/v1/me/password"): [
        Case(SIGNED_IN, 200, body=lambda f: {"password": PASSWORD, "new_password": PASSWORD})
    ],
    ("GET", "/api/v1/tokens"): [Case(SIGNED_IN, 200)],
    ("POST", "/api/v1/tokens"): [Case(SIGNED_IN, 201, body=fresh("t"))],
    ("DELETE", "/api/v1/tokens/{token_id}"): [Case(ONLY_MINE, 200, "mine", setup=token)],
    ("GET", "/api/v1/sources"): [Case(SIGNED_IN, 200)],
    ("POST", "/api/v1/sources"): [
        Case(MANAGE, 201, "group", body=lambda f: {"name": f"new{next(_fresh)}", "group": f["group"]}),
        Case(ADMIN, 201, body=fresh("loose")),  # a source in no group
    ],
    ("GET", "/api/v1/sources/{name}"): [Case(SEE, 200, "source")],
    ("DELETE", "/api/v1/sources/{name}"): [Case(MANAGE, 200, "source", setup=doomed_source)],
    ("GET", "/api/v1/sources/{name}/snapshots"): [Case(SEE, 200, "source")],
    ("POST", "/api/v1/sources/{name}/snapshots"): [Case(RUN, 202, "source", body=fresh("snap"))],
    ("GET", "/api/v1/sources/{name}/diff"): [Case(SEE, 200, "source", query="old=s1&new=s1")],
    ("GET", "/api/v1/sources/{name}/search"): [Case(SEE, 200, "source", query="q=f")],
    ("DELETE", "/api/v1/sources/{name}/snapshots/{snap}"): [Case(CONFIGURE, 200, "source", setup=doomed_snapshot)],
    ("POST", "/api/v1/sources/{name}/snapshots/{snap}/restore"): [
        Case(
            RESTORE, 202, "source", body=lambda f: {"path": "/hello.txt", "to": f"/copy{next(_fresh)}.txt"}, params=SNAP
        )
    ],
    ("GET", "/api/v1/sources/{name}/snapshots/{snap}/entries"): [Case(SEE, 200, "source", "path=/", params=SNAP)],
    ("GET", "/api/v1/sources/{name}/snapshots/{snap}/archive"): [
        Case(RESTORE, 200, "source", "path=/&format=zip", params=SNAP)
    ],
    ("GET", "/api/v1/sources/{name}/snapshots/{snap}/file"): [
        Case(RESTORE, 200, "source", "path=/hello.txt", params=SNAP)
    ],
    ("GET", "/api/v1/sources/{name}/config"): [Case(SEE, 200, "source")],
    ("GET", "/api/v1/sources/{name}/keys"): [Case(SEE, 200, "source")],
    ("POST", "/api/v1/sources/{name}/keys"): [Case(CONFIGURE, 201, "source", body=fresh_key)],
    ("POST", "/api/v1/sources/{name}/keys/generate"): [Case(CONFIGURE, 201, "source")],
    ("DELETE", "/api/v1/sources/{name}/keys/{key_id}"): [Case(CONFIGURE, 200, "source", setup=doomed_key)],
    ("GET", "/api/v1/sources/{name}/rsync-secret"): [Case(SEE, 200, "source")],
    ("PUT", "/api/v1/sources/{name}/rsync-secret"): [Case(CONFIGURE, 200, "source")],
    ("DELETE", "/api/v1/sources/{name}/rsync-secret"): [Case(CONFIGURE, 200, "source")],
    ("GET", "/api/v1/sources/{name}/smb"): [Case(SEE, 200, "source")],
    ("GET", "/api/v1/sessions"): [Case(SIGNED_IN, 200), Case(SEE, 200, "source", query="source={name}")],
    ("GET", "/api/v1/status"): [Case(SIGNED_IN, 200)],
    ("GET", "/api/v1/doors"): [Case(SIGNED_IN, 200)],
    ("GET", "/api/v1/schedule"): [Case(SIGNED_IN, 200, query="cron=0%202%20*%20*%20*")],
    ("GET", "/api/v1/config"): [
        Case(SIGNED_IN, 200),  # global settings: anyone signed in, as on the settings page
        Case(MEMBER, 200, "group", query="group={group}"),
        Case(SEE, 200, "source", query="source={name}"),
    ],
    ("PUT", "/api/v1/config"): [
        Case(ADMIN, 200, body=lambda f: {"key": "notify_success", "value": False}),
        Case(MANAGE, 200, "group", body=lambda f: {"key": "notify_success", "value": False, "group": f["group"]}),
        Case(CONFIGURE, 200, "source", body=lambda f: {"key": "retention", "value": {"last": 3}, "source": f["name"]}),
    ],
    ("GET", "/api/v1/pool"): [Case(SIGNED_IN, 200)],
    ("GET", "/api/v1/usage"): [Case(SIGNED_IN, 200, query="days=30")],
    ("POST", "/api/v1/pool/gc"): [Case(ADMIN, 202)],
    ("POST", "/api/v1/pool/scrub"): [Case(ADMIN, 202)],
    ("GET", "/api/v1/jobs"): [Case(SIGNED_IN, 200)],
    ("GET", "/api/v1/jobs/{job_id}"): [Case(MINE, 200, "mine", setup=queued_job)],
    ("DELETE", "/api/v1/jobs/{job_id}"): [Case(MINE, 200, "mine", setup=queued_job)],
    ("GET", "/api/v1/jobs/{job_id}/events"): [Case(MINE, 200, "mine", setup=ended_job)],
    ("GET", "/api/v1/maintenance"): [Case(SIGNED_IN, 200)],
    ("PUT", "/api/v1/maintenance"): [Case(ADMIN, 200, body=lambda f: {"on": False})],
    ("GET", "/api/v1/users"): [Case(ADMIN, 200)],
    ("POST", "/api/v1/users"): [Case(ADMIN, 201, body=lambda f: {"name": f"u{next(_fresh)}", "password": PASSWORD})],
    ("DELETE", "/api/v1/users/{name}"): [Case(ADMIN, 200, setup=doomed_user)],
    ("PUT", "/api/v1/users/{name}"): [Case(ADMIN, 200, setup=doomed_user, body=lambda f: {"admin": False})],
    ("POST", "/api/v1/users/{name}/password"): [Case(ADMIN, 200, setup=doomed_user)],
    ("DELETE", "/api/v1/groups/{group}"): [Case(ADMIN, 200, setup=doomed_group)],
    ("PUT", "/api/v1/sources/{name}/access"): [
        Case(ADMIN, 200, "source", setup=doomed_source, body=lambda f: {"group": f["group"], "owner": f["owner"]})
    ],
    ("GET", "/api/v1/groups"): [Case(SIGNED_IN, 200)],
    ("POST", "/api/v1/groups"): [Case(ADMIN, 201, body=fresh("grp"))],
    ("PUT", "/api/v1/groups/{group}/members/{member}"): [
        Case(MANAGE, 200, "group", body=lambda f: {"role": None}, params={"member": BYSTANDER})
    ],
}


def expected(case: Case, persona: str, index: int) -> int:
    """The status `persona` must get: the operation's own on success, else 401, 404 (hidden) or 403."""
    if persona in case.who[index]:
        return case.ok
    if persona == ANON:
        return 401
    hiding = {"source": SEE[index], "group": MEMBER[index], "mine": frozenset()}.get(case.hidden)
    return 404 if hiding is not None and persona not in hiding else 403


def call(w: World, method: str, path: str, case: Case, persona: str, side: Fill) -> int:
    fill: Fill = {"name": side["source"], **side, **case.params}
    if case.setup is not None:
        made = case.setup(w, persona, fill)
        fill.update(made, **({"name": made["source"]} if "source" in made else {}))
    url = path.format(**fill) + ("?" + case.query.format(**fill) if case.query else "")
    reply = w.app.test_client().open(url, method=method, json=None if case.body is None else case.body(fill),
                                     headers=w.headers(persona))  # fmt: skip
    reply.close()
    return reply.status_code


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(Path(tmp_path_factory.mktemp("matrix"))) as w:
        yield w


def spec_operations(w: World) -> set[tuple[str, str]]:
    spec = w.app.test_client().get("/api/v1/openapi.json").json
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}  # type: ignore[index]


def route_operations(w: World) -> set[tuple[str, str]]:
    """The application's /api/v1 routes, written as openapi.json writes paths (`any(...)` spelled out)."""
    import re

    out = set()
    for rule in w.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:  # type: ignore[operator]
            choices = re.search(r"<any\(([^)]*)\):\w+>", rule.rule)
            for word in [w.strip() for w in choices.group(1).split(",")] if choices else [""]:
                path = re.sub(r"<any\([^)]*\):\w+>", word, rule.rule)
                out.add((method, re.sub(r"<(?:[^:>]*:)?(\w+)>", r"{\1}", path)))
    return out


def test_every_operation_has_a_rule_and_every_route_is_described(appliance: World) -> None:
    described = spec_operations(appliance)
    assert set(TABLE) == described, {
        "no rule in TABLE": described - set(TABLE),
        "no such operation": set(TABLE) - described,
    }
    routes = route_operations(appliance)
    assert routes == described, {"not described": routes - described, "described, no route": described - routes}


@pytest.mark.parametrize("operation", sorted(TABLE), ids=" ".join)
def test_who_may_call_it(appliance: World, operation: tuple[str, str]) -> None:
    method, path = operation
    wrong = []
    for case in TABLE[operation]:
        for index, side in enumerate((OWN, FOREIGN)):
            for persona in PEOPLE:
                got = call(appliance, method, path, case, persona, {**side, "side": ("own", "foreign")[index]})
                want = expected(case, persona, index)
                if got != want:
                    wrong.append(f"{persona} on {('own', 'foreign')[index]} {case.query or ''}: {got}, not {want}")
    assert not wrong, wrong
