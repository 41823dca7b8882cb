"""The REST API and the web UI through Flask's test client: accounts, roles, CSRF, jobs, bad input."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from appliance.app import create_app
from appliance.config import Config
from appliance.services import Services
from engine.backup import backup_and_snapshot
from engine.deployment import Deployment

PASSWORD = "correct horse"
# (user, admin?, {group: role})
PEOPLE = [
    ("root", True, {}),
    ("boss", False, {"g1": "admin"}),
    ("ops", False, {"g1": "operator"}),
    ("mia", False, {"g1": "member"}),
    ("stranger", False, {"g2": "operator"}),
]
# source -> (group, owner)
SOURCES = {"a": ("g1", None), "b": ("g1", "mia"), "c": ("g2", None)}


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    dep = Deployment.open(tmp_path / "data", db_url)
    services = Services.build(dep)
    for group in ("g1", "g2"):
        services.accounts.add_group(group)
    for name, admin, roles in PEOPLE:
        services.accounts.add_user(name, PASSWORD, admin=admin)
        for group, role in roles.items():
            services.accounts.set_role(group, name, role)
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_text("hello from a snapshot\n")
    for source, (group, owner) in SOURCES.items():
        dep.add_source(source)
        services.accounts.assign_source(source, group, owner)
        backup_and_snapshot(dep, source, str(src), "s1")
    assert services.runner is not None
    services.runner.start()
    app = create_app(services)
    app.config["TESTING"] = True
    try:
        yield app
    finally:
        services.runner.stop()
        dep.close()


def signed_in(app: Flask, name: str) -> tuple[FlaskClient, dict[str, str]]:
    client = app.test_client()
    reply = client.post("/api/v1/login", json={"name": name, "password": PASSWORD})
    assert reply.status_code == 200, reply.json
    return client, {"X-CSRF-Token": reply.json["csrf"]}  # type: ignore[index]


def finished(client: FlaskClient, job_id: int) -> Any:
    """A job's document once it has ended (or after 15 s)."""
    for _ in range(300):
        done = client.get(f"/api/v1/jobs/{job_id}").json
        if done["state"] in ("done", "failed", "cancelled"):  # type: ignore[index]
            break
        time.sleep(0.05)
    return done


# What each person may do to each source: see (GET), restore (download), run (snapshot), configure (delete).
EXPECT = {
    "root": {"a": "see restore run configure", "b": "see restore run configure", "c": "see restore run configure"},
    "boss": {"a": "see restore run configure", "b": "see restore run configure", "c": ""},
    "ops": {"a": "see restore run configure", "b": "see restore run configure", "c": ""},
    "mia": {"a": "", "b": "see restore", "c": ""},
    "stranger": {"a": "", "b": "", "c": "see restore run configure"},
}


@pytest.mark.parametrize("person", [p[0] for p in PEOPLE])
def test_every_role_against_every_source(app: Flask, person: str) -> None:
    client, csrf = signed_in(app, person)
    listed = {s["name"] for s in client.get("/api/v1/sources").json}  # type: ignore[union-attr]
    assert listed == {s for s, may in EXPECT[person].items() if "see" in may}
    for source, may in EXPECT[person].items():
        hidden = 404 if "see" not in may else 403
        base = f"/api/v1/sources/{source}"
        checks: list[tuple[str, Any, int]] = [
            ("see", client.get(base), 200),
            ("see", client.get(f"{base}/snapshots/s1/entries?path=/"), 200),
            ("restore", client.get(f"{base}/snapshots/s1/file?path=/hello.txt"), 200),
            ("run", client.post(f"{base}/snapshots", json={"name": f"by-{person}"}, headers=csrf), 202),
        ]
        for action, reply, ok in checks:
            expected = ok if action in may else (404 if "see" not in may else 403)
            assert reply.status_code == expected, (person, source, action, reply.json if reply.is_json else "")
        if "restore" in may:
            assert client.get(f"{base}/snapshots/s1/file?path=/hello.txt").data == b"hello from a snapshot\n"
        reply = client.delete(f"{base}/snapshots/nonexistent", headers=csrf)
        assert reply.status_code == (404 if "configure" in may else hidden)


def test_sessions_need_csrf_tokens_do_not(app: Flask) -> None:
    client, csrf = signed_in(app, "root")
    assert client.post("/api/v1/sources", json={"name": "x", "group": "g1"}).status_code == 403  # no CSRF
    assert client.post("/api/v1/sources", json={"name": "x", "group": "g1"}, headers=csrf).status_code == 201
    token = client.post("/api/v1/tokens", json={"name": "script"}, headers=csrf).json["token"]  # type: ignore[index]
    bare = app.test_client()
    assert bare.get("/api/v1/sources").status_code == 401
    bearer = {"Authorization": f"Bearer {token}"}
    assert bare.post("/api/v1/sources", json={"name": "y", "group": "g1"}, headers=bearer).status_code == 201
    assert bare.get("/api/v1/me", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    token_id = client.get("/api/v1/tokens").json[0]["id"]  # type: ignore[index]
    assert client.delete(f"/api/v1/tokens/{token_id}", headers=csrf).status_code == 200
    assert bare.get("/api/v1/sources", headers=bearer).status_code == 401  # revoked


def test_logins_are_rate_limited(app: Flask) -> None:
    client = app.test_client()
    for _ in range(5):
        assert client.post("/api/v1/login", json={"name": "ops", "password": "wrong!!!"}).status_code == 401
    reply = client.post("/api/v1/login", json={"name": "ops", "password": PASSWORD})
    assert reply.status_code == 429 and "too many" in reply.json["error"]  # type: ignore[index]
    assert client.post("/api/v1/login", json={"name": "mia", "password": PASSWORD}).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b"{not json", "application/json", 400, "JSON object"),
        (b"[1, 2]", "application/json", 400, "JSON object"),
        (b'{"name": "z", "color": "red"}', "application/json", 400, "unknown fields: color"),
        (b'{"group": "g1"}', "application/json", 400, "missing fields: name"),
        (b'{"name": "../etc"}', "application/json", 400, "source"),
        (b'{"name": "' + b"x" * (2 << 20) + b'"}', "application/json", 413, ""),
    ],
)
def test_bad_bodies_get_clear_4xx(app: Flask, body: bytes, content_type: str, status: int, says: str) -> None:
    client, csrf = signed_in(app, "root")
    reply = client.post("/api/v1/sources", data=body, content_type=content_type, headers=csrf)
    assert reply.status_code == status
    assert says in reply.json["error"]  # type: ignore[index]


def test_jobs_run_and_report(app: Flask) -> None:
    client, csrf = signed_in(app, "root")
    job = client.post("/api/v1/sources/a/snapshots", json={"name": "nightly"}, headers=csrf).json
    done = finished(client, job["id"])  # type: ignore[index]
    assert done["state"] == "done" and done["progress"]["snapshot"] == "nightly"  # type: ignore[index]
    names = [s["name"] for s in client.get("/api/v1/sources/a/snapshots").json]  # type: ignore[union-attr]
    assert "nightly" in names
    stream = client.get(f"/api/v1/jobs/{job['id']}/events")  # type: ignore[index]
    assert stream.mimetype == "text/event-stream"
    events = [json.loads(line[6:]) for line in stream.get_data(as_text=True).splitlines() if line.startswith("data: ")]
    assert events[-1]["state"] == "done" and events[-1]["progress"]["snapshot"] == "nightly"
    gc_job = client.post("/api/v1/pool/gc", headers=csrf)
    assert gc_job.status_code == 202
    ops, ops_csrf = signed_in(app, "ops")
    assert ops.post("/api/v1/pool/gc", headers=ops_csrf).status_code == 403
    assert ops.get(f"/api/v1/jobs/{job['id']}").status_code == 404  # not theirs  # type: ignore[index]


def test_openapi_describes_every_route(app: Flask) -> None:
    spec = app.test_client().get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.")  # type: ignore[index]
    routes = {(r.rule.replace("<", "{").replace(">", "}"), m.lower()) for r in app.url_map.iter_rules()
              if r.rule.startswith("/api/v1/") and "openapi" not in r.rule
              for m in r.methods - {"HEAD", "OPTIONS"}}  # fmt: skip
    described = {(p, m) for p, ops in spec["paths"].items() for m in ops}  # type: ignore[index]
    big = "int(max=9223372036854775807):"
    normalized = {(p.replace(big, "").replace("{any(gc, scrub):kind}", "gc"), m) for p, m in routes}
    assert normalized - {("/api/v1/pool/gc", "post")} <= described


def test_web_ui_pages(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/").status_code == 302  # to the login page
    login = client.post("/login", data={"name": "ops", "password": PASSWORD, "next": "/"})
    assert login.status_code == 302
    home = client.get("/").get_data(as_text=True)
    assert ">a</a>" in home and ">b</a>" in home and ">c</a>" not in home
    page = client.get("/sources/a/snapshots/s1/?path=/").get_data(as_text=True)
    assert "hello.txt" in page and "/api/v1/sources/a/snapshots/s1/file?path=" in page
    assert client.post("/sources/a/snapshots", data={"name": "from-ui"}).status_code == 403  # no CSRF
    wrong = app.test_client().post("/login", data={"name": "ops", "password": "nope"})
    assert "wrong name or password" in wrong.get_data(as_text=True)


def test_error_pages_keep_the_navigation_and_say_what_failed_in_words(app: Flask) -> None:
    client = app.test_client()
    client.post("/login", data={"name": "ops", "password": PASSWORD, "next": "/"})
    missing = client.get("/sources/a/snapshots/s1/?path=/no/such%FF")
    text = missing.get_data(as_text=True)
    assert missing.status_code == 404 and "<h1>Not found</h1>" in text
    assert "no '/no/such" in html.unescape(text) and "b'" not in html.unescape(text) and "Traceback" not in text
    assert 'href="/jobs"' in text and "Sign out" in text  # the navigation of whoever is signed in
    refused = client.get("/users")
    assert refused.status_code == 403 and "<h1>Not allowed</h1>" in refused.get_data(as_text=True)
    assert 'href="/jobs"' in refused.get_data(as_text=True)
    assert "Sign out" not in app.test_client().get("/no/such/page").get_data(as_text=True)
    # Signed out, a form's POST-only path leads to the dashboard after signing in; a page, back to itself.
    assert app.test_client().post("/sources/a/snapshots").headers["Location"] == "/login?next=/"
    assert app.test_client().get("/jobs?limit=5").headers["Location"] == "/login?next=/jobs?limit%3D5"


def test_storage_users_settings_pages_and_the_usage_chart(app: Flask) -> None:
    from appliance import usage

    services = app.extensions["cairn"]
    dep = services.deployment
    start = time.time() - 7200
    client = app.test_client()
    client.post("/login", data={"name": "root", "password": PASSWORD, "next": "/"})
    assert "Not enough history yet: 0 sample" in client.get("/").get_data(as_text=True)
    assert usage.sample(dep, start) and not usage.sample(dep, start + 60)  # one an hour
    dep.create_snapshot("a", "grown")  # a changed source between two samples
    assert usage.sample(dep, start + 3600)
    home = client.get("/").get_data(as_text=True)
    assert 'data-usage="/api/v1/usage"' in home and "Not enough history" not in home
    assert "Saved by dedup" in home and "Saved by compression" in home and " a day (last 7 days)" in home
    doc = client.get("/api/v1/usage?days=7").json
    assert len(doc["t"]) == 2 and doc["t"][0] < doc["t"][1] and len(doc["stored"]) == len(doc["ratio"]) == 2
    assert set(doc["sources"]) == {"a", "b", "c"}  # the sources with snapshots; root sees them all
    ops = app.test_client()
    ops.post("/login", data={"name": "mia", "password": PASSWORD, "next": "/"})
    assert set(ops.get("/api/v1/usage?days=365").json["sources"]) == {"b"}  # what mia may see
    storage = client.get("/storage").get_data(as_text=True)
    assert "0 disk images" in storage
    assert "Scrub now" in storage and "Last scrub" in storage and "Last garbage collection</th><td>never" in storage
    assert "mia" in client.get("/users").get_data(as_text=True)
    assert "retention" in client.get("/settings").get_data(as_text=True)
    ops = app.test_client()
    ops.post("/login", data={"name": "ops", "password": PASSWORD, "next": "/"})
    assert ops.get("/users").status_code == 403
    assert "Scrub now" not in ops.get("/storage").get_data(as_text=True)


def test_restore_a_path_into_current(app: Flask) -> None:
    services = app.extensions["cairn"]
    dep = services.deployment
    tree = dep.working_tree("a")
    from engine.worktree.tree import ROOT

    tree.unlink(ROOT, b"hello.txt")  # lost from current/ ...
    client, csrf = signed_in(app, "ops")
    job = client.post("/api/v1/sources/a/snapshots/s1/restore", json={"path": "/hello.txt"}, headers=csrf).json
    done = finished(client, job["id"])  # type: ignore[index]
    assert done["state"] == "done", done  # type: ignore[index]
    ino = tree.lookup(ROOT, b"hello.txt").ino  # ... and back, by reference to the same chunks
    assert tree.read(ino, 0, 100) == b"hello from a snapshot\n"
    mia, mia_csrf = signed_in(app, "mia")
    assert mia.post("/api/v1/sources/a/snapshots/s1/restore", json={"path": "/"}, headers=mia_csrf).status_code == 404
    assert client.post("/api/v1/sources/a/snapshots/zz/restore", json={"path": "/"}, headers=csrf).status_code == 404


def test_restore_to_a_new_location(app: Flask) -> None:
    """Into a new folder of the same source (parents made) and into another source the person may restore to."""
    dep = app.extensions["cairn"].deployment
    from engine.worktree.tree import ROOT

    client, csrf = signed_in(app, "ops")
    url = "/api/v1/sources/a/snapshots/s1/restore"
    for doc, source, path in [
        ({"path": "/", "to": "/restored/2026/s1"}, "a", b"restored/2026/s1/hello.txt"),
        ({"path": "/hello.txt", "to": "/copy.txt", "into": "b"}, "b", b"copy.txt"),
    ]:
        job = client.post(url, json=doc, headers=csrf).json
        done = finished(client, job["id"])  # type: ignore[index]
        assert done["state"] == "done", done  # type: ignore[index]
        tree = dep.working_tree(source)
        assert tree.read(tree.resolve(path), 0, 100) == b"hello from a snapshot\n"
        assert done["progress"]["to"] == f"{source}/current/{doc['to'].strip('/')}"  # type: ignore[index]
    tree = dep.working_tree("a")
    assert tree.lookup(ROOT, b"hello.txt")  # the original stays where it was
    # ops may not write into g2's source c; a file in the way of the destination fails the job, changing nothing
    assert client.post(url, json={"path": "/", "into": "c"}, headers=csrf).status_code == 404
    for to in ("/hello.txt/inside", "/../x", "/"):
        job = client.post(url, json={"path": "/hello.txt", "to": to}, headers=csrf).json
        done = finished(client, job["id"])  # type: ignore[index]
        assert done["state"] == "failed" and "restore" in done["error"], done  # type: ignore[index]


def test_folder_archives(app: Flask) -> None:
    import io
    import zipfile

    client, _ = signed_in(app, "ops")
    reply = client.get("/api/v1/sources/a/snapshots/s1/archive?path=/&format=zip")
    assert reply.status_code == 200 and reply.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(reply.data)) as zf:
        assert zf.read("a-s1/hello.txt") == b"hello from a snapshot\n"
    tar = client.get("/api/v1/sources/a/snapshots/s1/archive?path=/&format=tar.zst")
    assert tar.status_code == 200 and tar.data[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert client.get("/api/v1/sources/a/snapshots/s1/archive?path=/hello.txt").status_code == 400
    assert client.get("/api/v1/sources/a/snapshots/s1/archive?format=rar").status_code == 400
    mia, _ = signed_in(app, "mia")
    assert mia.get("/api/v1/sources/a/snapshots/s1/archive").status_code == 404


def test_diff_two_snapshots(app: Flask) -> None:
    dep = app.extensions["cairn"].deployment
    tree = dep.working_tree("a")
    from engine.worktree.tree import ROOT

    ino = tree.create(ROOT, b"new.txt", 0o644).ino
    tree.open(ino)
    tree.write(ino, 0, b"fresh")
    tree.release(ino)
    dep.create_snapshot("a", "s2")
    client, _ = signed_in(app, "ops")
    found = client.get("/api/v1/sources/a/diff?old=s1&new=s2").json
    assert {"path": "new.txt", "change": "added", "size": 5} in found  # type: ignore[operator]
    page = app.test_client()
    page.post("/login", data={"name": "ops", "password": PASSWORD, "next": "/"})
    assert "new.txt" in page.get("/sources/a/diff?old=s1&new=s2").get_data(as_text=True)
    assert client.get("/api/v1/sources/a/diff?old=s1&new=nope").status_code == 404


def test_users_page_forms(app: Flask) -> None:
    client = app.test_client()
    client.post("/login", data={"name": "root", "password": PASSWORD, "next": "/"})
    csrf = client.get("/api/v1/me").json["csrf"]  # type: ignore[index]
    add = {"csrf": csrf, "action": "add-user", "name": "newbie", "password": "long enough pw"}
    assert client.post("/users", data=add).status_code == 302
    assert client.post("/users", data={"csrf": csrf, "action": "add-group", "name": "g3"}).status_code == 302
    role = {"csrf": csrf, "action": "set-role", "user": "newbie", "group": "g3", "role": "operator"}
    assert client.post("/users", data=role).status_code == 302
    assert app.extensions["cairn"].accounts.user("newbie").roles == {"g3": "operator"}
    assert client.post("/users", data={**add, "csrf": "wrong"}).status_code == 403
    ops = app.test_client()
    ops.post("/login", data={"name": "ops", "password": PASSWORD, "next": "/"})
    ops_csrf = ops.get("/api/v1/me").json["csrf"]  # type: ignore[index]
    assert ops.post("/users", data={**add, "csrf": ops_csrf, "name": "sneaky"}).status_code == 403


def test_administrators_manage_users_groups_and_sources_in_the_ui(app: Flask) -> None:
    accounts = app.extensions["cairn"].accounts
    client = app.test_client()
    client.post("/login", data={"name": "root", "password": PASSWORD, "next": "/"})
    csrf = client.get("/api/v1/me").json["csrf"]  # type: ignore[index]

    def post(**form: str) -> Any:
        return client.post("/users", data={"csrf": csrf, **form})

    assert post(action="add-user", name="newbie", password="long enough pw").status_code == 302
    assert accounts.user("newbie").must_change  # an administrator's password for someone else is one-time
    reset = post(action="reset-password", name="ops")
    one_time = html.unescape(reset.get_data(as_text=True)).split("<code>")[1].split("</code>")[0]
    assert reset.status_code == 200 and accounts.user("ops").must_change and len(one_time) >= 12
    assert one_time not in client.get("/users").get_data(as_text=True)  # shown once
    assert post(action="set-admin", name="ops", admin="yes").status_code == 302 and accounts.user("ops").admin
    assert post(action="set-admin", name="ops", admin="no").status_code == 302 and not accounts.user("ops").admin
    assert post(action="set-admin", name="root", admin="no").status_code == 409  # the last administrator
    assert post(action="add-group", name="g9").status_code == 302
    assert post(action="assign-source", name="c", group="g9", owner="mia").status_code == 302
    assert accounts.source_access()["c"] == ("g9", "mia")
    assert post(action="remove-group", name="g9").status_code == 302
    assert accounts.source_access()["c"] == (None, "mia") and "g9" not in accounts.list_groups()
    assert post(action="remove-user", name="newbie", confirm="wrong").status_code == 400
    assert post(action="remove-user", name="newbie", confirm="newbie").status_code == 302
    assert "newbie" not in [u.name for u in accounts.list_users()]
    # ops signs in with the one-time password: every page leads to choosing a new one first.
    ops = app.test_client()
    ops.post("/login", data={"name": "ops", "password": one_time, "next": "/"})
    assert ops.get("/").headers["Location"] == "/password"
    assert ops.get("/jobs").headers["Location"] == "/password"
    assert ops.get("/api/v1/me").json["user"]["must_change"] is True  # type: ignore[index]
    ops_csrf = ops.get("/api/v1/me").json["csrf"]  # type: ignore[index]
    same = {"csrf": ops_csrf, "password": one_time, "new_password": one_time, "repeat": one_time}
    assert "other than the one-time" in ops.post("/password", data=same).get_data(as_text=True)
    mine = {**same, "new_password": "my own password", "repeat": "my own password"}
    assert ops.post("/password", data=mine).headers["Location"] == "/"
    assert ops.get("/").status_code == 200 and not accounts.user("ops").must_change
    assert accounts.login("ops", "my own password").name == "ops"


def test_settings_page_form(app: Flask) -> None:
    client = app.test_client()
    client.post("/login", data={"name": "root", "password": PASSWORD, "next": "/"})
    csrf = client.get("/api/v1/me").json["csrf"]  # type: ignore[index]
    assert client.post("/settings", data={"csrf": csrf, "key": "schedule", "value": "0 3 * * *"}).status_code == 302
    page = client.get("/settings").get_data(as_text=True)
    assert 'value="0 3 * * *"' in page and page.count("03:00</time>") == 5  # the next five runs
    bad = client.post("/settings", data={"csrf": csrf, "key": "schedule", "value": "often"}, follow_redirects=True)
    assert "cron expression" in bad.get_data(as_text=True)
    days = {"csrf": csrf, "key": "retention", "last": "3", "daily": "7", "weekly": "0", "monthly": "", "hourly": "0",
            "yearly": "0"}  # fmt: skip
    assert client.post("/settings", data=days).status_code == 302
    services = app.extensions["cairn"]
    assert Config(services.deployment.catalog).value("retention") == {"last": 3, "daily": 7}
    assert client.post("/settings", data={"csrf": csrf, "key": "stale_after", "value": "1.5"}).status_code == 302
    assert Config(services.deployment.catalog).value("stale_after") == 1.5
    assert client.post("/settings", data={"csrf": csrf, "key": "notify_success", "value": "yes"}).status_code == 302
    assert Config(services.deployment.catalog).value("notify_success") is True
    odd = client.post("/settings", data={"csrf": csrf, "key": "tree_cache", "value": "lots"}, follow_redirects=True)
    assert "tree_cache is a number" in html.unescape(odd.get_data(as_text=True))


def test_settings_page_at_each_level(app: Flask) -> None:
    """Group and source levels: who may set them, what the effective view shows, and removing a value there."""
    people = {}
    for name in ("root", "boss", "ops", "mia"):
        client = app.test_client()
        client.post("/login", data={"name": name, "password": PASSWORD, "next": "/"})
        people[name] = (client, client.get("/api/v1/me").json["csrf"])  # type: ignore[index]

    def set_at(name: str, at: str, key: str, **fields: str) -> int:
        client, csrf = people[name]
        return client.post("/settings", data={"csrf": csrf, "at": at, "key": key, **fields}).status_code

    assert set_at("root", "", "schedule", value="0 1 * * *") == 302
    assert set_at("boss", "group:g1", "schedule", value="0 5 * * *") == 302  # boss administers g1
    assert set_at("ops", "group:g1", "schedule", value="0 4 * * *") == 403  # an operator configures sources only
    assert set_at("ops", "source:a", "retention", daily="7") == 302
    assert set_at("mia", "source:b", "retention", daily="1") == 403  # owning a source is not configuring it
    assert set_at("boss", "source:c", "retention", daily="1") == 404  # g2's source: not even seen
    # a setting of the whole appliance is not offered at a source, and refused there in words
    form = people["ops"][0].get("/settings?at=source:a").get_data(as_text=True)
    assert 'id="set-retention"' in form and 'id="set-tree_cache"' not in form
    client, csrf = people["root"]
    refused = client.post("/settings", data={"csrf": csrf, "at": "source:a", "key": "tree_cache", "value": "64"},
                          follow_redirects=True)  # fmt: skip
    assert "whole appliance" in refused.get_data(as_text=True)
    page = people["ops"][0].get("/settings?at=source:a").get_data(as_text=True)
    assert "<td>group:g1</td>" in page and "<td>source:a</td>" in page and "0 5 * * *" in page
    assert 'id="set-schedule"' in page
    page = people["mia"][0].get("/settings?at=source:b").get_data(as_text=True)
    assert "0 5 * * *" in page and 'id="set-schedule"' not in page  # seen, not changed
    assert people["mia"][0].get("/settings?at=group:g2").status_code == 404
    assert people["mia"][0].get("/settings?at=nonsense:x").status_code == 400
    assert set_at("boss", "group:g1", "schedule", clear="1") == 302  # removed at the group: the global value shows
    page = people["ops"][0].get("/settings?at=source:a").get_data(as_text=True)
    assert "0 1 * * *" in page and "0 5 * * *" not in page


def test_storage_page_maintenance_and_last_gc(app: Flask) -> None:
    """An administrator turns maintenance mode on and off from the storage page; a finished GC shows there."""
    dep = app.extensions["cairn"].deployment
    client, csrf = signed_in(app, "root")
    form = {"csrf": csrf["X-CSRF-Token"], "on": "yes", "reason": "disk swap"}
    assert client.post("/storage/maintenance", data=form).status_code == 302
    assert dep.maintenance and dep.maintenance["reason"] == "disk swap"
    page = client.get("/storage").get_data(as_text=True)
    assert "maintenance mode" in page and "End maintenance mode" in page
    ops, ops_csrf = signed_in(app, "ops")
    assert ops.post("/storage/maintenance", data={"csrf": ops_csrf["X-CSRF-Token"], "on": "no"}).status_code == 403
    assert dep.maintenance is not None
    assert client.post("/storage/maintenance", data={**form, "on": "no"}).status_code == 302
    assert dep.maintenance is None
    job = client.post("/api/v1/pool/gc", json={}, headers=csrf).json
    assert finished(client, job["id"])["state"] == "done"  # type: ignore[index]
    page = client.get("/storage").get_data(as_text=True)
    assert "Last garbage collection</th><td>never" not in page and "packs examined" in page


def test_cancel_a_queued_job(tmp_path: Path) -> None:
    """A queued job can be cancelled (API, web form) and is never run; a running or ended one cannot."""
    dep = Deployment.open(tmp_path / "data")
    services = Services.build(dep, workers=1)  # workers not started yet: jobs stay queued
    try:
        services.accounts.add_user("root", PASSWORD, admin=True)
        services.accounts.add_user("ann", PASSWORD)
        dep.add_source("a")
        app = create_app(services)
        client, csrf = signed_in(app, "root")
        first = client.post("/api/v1/sources/a/snapshots", json={"name": "one"}, headers=csrf).json
        second = client.post("/api/v1/sources/a/snapshots", json={"name": "two"}, headers=csrf).json
        ann, ann_csrf = signed_in(app, "ann")
        assert ann.delete(f"/api/v1/jobs/{first['id']}", headers=ann_csrf).status_code == 404  # not hers
        assert client.delete(f"/api/v1/jobs/{first['id']}").status_code == 403  # no CSRF token
        gone = client.delete(f"/api/v1/jobs/{first['id']}", headers=csrf)
        assert gone.status_code == 200 and gone.json["state"] == "cancelled"  # type: ignore[index]
        assert "cancelled by root" in gone.json["error"]  # type: ignore[index]
        assert client.delete(f"/api/v1/jobs/{first['id']}", headers=csrf).status_code == 409
        page = client.get(f"/jobs/{second['id']}").get_data(as_text=True)
        assert 'id="cancel"' in page
        form = {"csrf": csrf["X-CSRF-Token"]}
        assert client.post(f"/jobs/{second['id']}/cancel", data=form).status_code == 302
        third = client.post("/api/v1/sources/a/snapshots", json={"name": "three"}, headers=csrf).json
        assert services.runner is not None
        services.runner.start()
        try:
            assert finished(client, third["id"])["state"] == "done"  # type: ignore[index]
        finally:
            services.runner.stop()
        assert [s.name for s in dep.list_snapshots("a")] == ["three"]  # the cancelled ones never ran
        assert client.delete(f"/api/v1/jobs/{third['id']}", headers=csrf).status_code == 409
        assert 'id="cancel"' not in client.get(f"/jobs/{third['id']}").get_data(as_text=True)
    finally:
        dep.close()


def test_a_running_job_stops_when_asked_where_it_can_and_logs_its_steps(tmp_path: Path) -> None:
    """A snapshot waiting for a backup session stops when asked (no snapshot taken); a running restore cannot."""
    dep = Deployment.open(tmp_path / "data")
    services = Services.build(dep, workers=1)
    try:
        services.accounts.add_user("root", PASSWORD, admin=True)
        dep.add_source("a")
        app = create_app(services)
        client, csrf = signed_in(app, "root")
        session = services.sessions.begin("a", "ssh", "127.0.0.1", "laptop")  # a backup still writing
        job = client.post("/api/v1/sources/a/snapshots", json={"name": "one"}, headers=csrf).json
        assert services.runner is not None
        services.runner.start()
        try:
            deadline = time.monotonic() + 30
            while "waiting" not in (services.jobs.get(job["id"]).progress or {}).get("step", ""):  # type: ignore[index]
                assert time.monotonic() < deadline
                time.sleep(0.05)
            asked = client.delete(f"/api/v1/jobs/{job['id']}", headers=csrf)  # type: ignore[index]
            assert asked.status_code == 200 and asked.json["state"] == "running"  # type: ignore[index]
            assert asked.json["stop_by"] == "root"  # type: ignore[index]
            ended = finished(client, job["id"])  # type: ignore[index]
        finally:
            services.runner.stop()
        assert ended["state"] == "cancelled" and ended["error"] == "stopped while running, as root asked"
        assert [text for _, text in ended["log"]] == [
            "started", "waiting for 1 backup session(s) to end", "root asked it to stop",
            "stopped while running, as root asked",
        ]  # fmt: skip
        assert dep.list_snapshots("a") == []
        page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)  # type: ignore[index]
        assert "root asked it to stop" in page and "<time" in page
        services.sessions.end(session.id, reason=None)
        restore = services.jobs.submit("restore", {"source": "a", "snapshot": "x", "path": "/"})
        assert services.jobs.claim("elsewhere") is not None  # running, on another worker
        refused = client.delete(f"/api/v1/jobs/{restore.id}", headers=csrf)
        assert refused.status_code == 409 and "cannot stop cleanly" in refused.json["error"]  # type: ignore[index]
    finally:
        dep.close()


def test_the_jobs_page_says_who_asked_for_each_job(app: Flask) -> None:
    jobs = app.extensions["cairn"].jobs
    jobs.submit("snapshot", {"source": "a", "name": None, "session": 7})
    jobs.submit("snapshot", {"source": "a", "name": None, "scheduled": True})
    client, _ = signed_in(app, "root")
    rows = [r for r in client.get("/jobs").get_data(as_text=True).split("<tr") if "snapshot" in r]
    assert ["a backup session" in r for r in rows[:2]] == [False, True]  # newest first
    assert "the scheduler" in rows[0]


def test_a_reserved_snapshot_name_is_refused_before_a_job_is_queued(app: Flask) -> None:
    client, csrf = signed_in(app, "root")
    before = len(client.get("/api/v1/jobs").json)  # type: ignore[arg-type]
    reply = client.post("/api/v1/sources/a/snapshots", json={"name": "latest"}, headers=csrf)
    assert reply.status_code == 400 and "reserved" in reply.json["error"]  # type: ignore[index]
    page = client.post("/sources/a/snapshots", data={"name": "Latest", "csrf": csrf["X-CSRF-Token"]})
    assert page.status_code == 400 and b"reserved" in page.data
    assert len(client.get("/api/v1/jobs").json) == before  # type: ignore[arg-type]


def test_send_test_mail_from_the_settings_page(app: Flask) -> None:
    """An administrator's test mail reaches the SMTP server; a dead server is said in words, and others may not."""
    from aiosmtpd.controller import Controller

    from .servers import free_port

    class Inbox:
        def __init__(self) -> None:
            self.rcpt: list[list[str]] = []

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            self.rcpt.append(envelope.rcpt_tos)  # type: ignore[attr-defined]
            return "250 OK"

    inbox, port = Inbox(), free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        Config(app.extensions["cairn"].deployment.catalog).set("smtp", {"host": "127.0.0.1", "port": port})
        client, csrf = signed_in(app, "root")
        form = {"csrf": csrf["X-CSRF-Token"], "to": "ops@example.org"}
        sent = client.post("/settings/test-mail", data=form, follow_redirects=True)
        assert "a test mail went to ops@example.org" in sent.get_data(as_text=True) and inbox.rcpt == [
            ["ops@example.org"]
        ]
    finally:
        smtp.stop()
    dead = client.post("/settings/test-mail", data=form, follow_redirects=True).get_data(as_text=True)
    assert "cannot mail ops@example.org" in dead and "Traceback" not in dead
    ops, ops_csrf = signed_in(app, "ops")
    assert ops.post("/settings/test-mail", data={"csrf": ops_csrf["X-CSRF-Token"], "to": "x@y.z"}).status_code == 403


def test_search_answers_for_the_sources_one_may_see_in_the_api_and_the_page(app: Flask) -> None:
    mia, _ = signed_in(app, "mia")
    found = mia.get("/api/v1/sources/b/search?q=HELLO").json
    assert found is not None and found["more"] is False
    (hit,) = found["results"]
    assert {k: v for k, v in hit.items() if k != "mtime"} == {"path": "/hello.txt", "kind": "file", "size": 22,
                                                              "versions": 1, "first": "s1", "last": "s1"}  # fmt: skip
    assert mia.get("/api/v1/sources/c/search?q=hello").status_code == 404  # not hers to see: not there
    assert mia.get("/api/v1/sources/b/search?q=%20").status_code == 400
    assert mia.get("/api/v1/sources/b/search?q=" + "x" * 256).status_code == 400
    assert mia.get("/api/v1/sources/b/search?q=h&limit=0").status_code == 400
    page = mia.get("/sources/b/search?q=*.txt").get_data(as_text=True)
    assert "/hello.txt" in page and "1 path whose name matches" in page
    assert "/sources/b/history?path=/hello.txt" in page
    assert "No name in any snapshot matches." in mia.get("/sources/b/search?q=nothing-like-it").get_data(as_text=True)
    assert mia.get("/sources/c/search?q=hello").status_code == 404
    assert 'id="search"' in mia.get("/sources/b").get_data(as_text=True)


def test_the_api_adds_a_user_with_a_one_time_password(app: Flask) -> None:
    root, csrf = signed_in(app, "root")
    made = root.post("/api/v1/users", json={"name": "temp", "password": "long enough pw", "one_time": True},
                     headers=csrf)  # fmt: skip
    assert made.status_code == 201 and made.json["must_change"] is True  # type: ignore[index]
    kept = root.post("/api/v1/users", json={"name": "kept", "password": "long enough pw"}, headers=csrf)
    assert kept.json["must_change"] is False  # type: ignore[index]
    odd = root.post("/api/v1/users", json={"name": "odd", "password": "long enough pw", "one_time": "yes"},
                    headers=csrf)  # fmt: skip
    assert odd.status_code == 400 and "one_time must be true or false" in odd.json["error"]  # type: ignore[index]
    temp = app.test_client()
    assert temp.post("/api/v1/login", json={"name": "temp", "password": "long enough pw"}).status_code == 200
    assert temp.get("/api/v1/me").json["user"]["must_change"] is True  # type: ignore[index]
    assert temp.get("/").headers["Location"].endswith("/password")  # the web asks for a new one first
