"""Web sessions live in the catalog: sign-out, a password change and a removed user end them on the server;
they expire after an idle hour and after 12 hours in all; user ids are never handed out again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from appliance.accounts import Accounts
from appliance.app import create_app
from appliance.services import Services
from dav.auth import hash_password
from engine.catalog import db
from engine.catalog.schema import jobs, memberships, source_access, tokens, users
from engine.deployment import Deployment

PASSWORD = "correct horse"
_HASH = hash_password(PASSWORD)  # ~50 ms of scrypt: once


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    with Deployment.open(tmp_path / "data", db_url) as dep:
        services = Services.build(dep)
        for name in ("root", "ops", "mia"):  # mia last: hers is the highest id, the one SQLite would reuse
            services.accounts.add_user(name, PASSWORD, admin=name == "root")
        app = create_app(services)
        app.config["TESTING"] = True
        yield app


def sign_in(app: Flask, name: str, password: str = PASSWORD, **kwargs: str) -> tuple[str, str]:
    """(the Cookie header the sign-in set, the CSRF token), as a browser would keep them."""
    reply = app.test_client().post("/api/v1/login", json={"name": name, "password": password}, **kwargs)
    assert reply.status_code == 200, reply.json
    cookie = "; ".join(h.split(";", 1)[0] for h in reply.headers.getlist("Set-Cookie"))
    return cookie, reply.json["csrf"]  # type: ignore[index]


def bare(app: Flask) -> FlaskClient:
    """A client that sends only the Cookie header it is given (what a kept copy of a cookie does)."""
    return app.test_client(use_cookies=False)


def me(app: Flask, cookie: str) -> int:
    return bare(app).get("/api/v1/me", headers={"Cookie": cookie}).status_code


def post(app: Flask, path: str, cookie: str, csrf: str, **kwargs: object) -> int:
    headers = {"Cookie": cookie, "X-CSRF-Token": csrf}
    return bare(app).post(path, headers=headers, **kwargs).status_code  # type: ignore[arg-type]


def test_sign_out_ends_the_session_on_the_server(app: Flask) -> None:
    cookie, csrf = sign_in(app, "ops")
    assert me(app, cookie) == 200
    assert post(app, "/api/v1/logout", cookie, csrf) == 200
    assert me(app, cookie) == 401  # a kept copy of the cookie no longer signs in
    web, web_csrf = sign_in(app, "ops")
    assert post(app, "/logout", web, web_csrf) == 302
    assert bare(app).get("/", headers={"Cookie": web}).status_code == 302  # to the login page


def test_a_password_change_ends_the_other_sessions(app: Flask) -> None:
    here, csrf = sign_in(app, "ops")
    there, _ = sign_in(app, "ops")
    change = {"password": PASSWORD, "new_password": "a new long one"}
    assert post(app, "/api/v1/me/password", here, csrf, json={**change, "password": "wrong one"}) == 401
    assert me(app, there) == 200  # a wrong current password changes nothing
    assert post(app, "/api/v1/me/password", here, csrf, json=change) == 200
    assert me(app, here) == 200  # the session that made the change stays signed in
    assert me(app, there) == 401
    assert app.test_client().post("/api/v1/login", json={"name": "ops", "password": PASSWORD}).status_code == 401
    again, _ = sign_in(app, "ops", "a new long one")
    Accounts(app.extensions["cairn"].deployment.catalog).set_password("ops", "set by cairn user passwd")
    assert me(app, here) == 401 and me(app, again) == 401  # `cairn user passwd`: every session ends


def test_a_removed_users_cookie_does_not_sign_in_the_next_user(app: Flask) -> None:
    accounts = app.extensions["cairn"].accounts
    old_id = accounts.user("mia").id
    cookie, _ = sign_in(app, "mia")
    root, root_csrf = sign_in(app, "root")
    removal = bare(app).delete("/api/v1/users/mia", headers={"Cookie": root, "X-CSRF-Token": root_csrf})
    assert removal.status_code == 200
    assert post(app, "/api/v1/users", root, root_csrf, json={"name": "newbie", "password": "long enough"}) == 201
    assert accounts.user("newbie").id > old_id  # ids are never handed out again
    assert me(app, cookie) == 401


def test_sessions_expire_when_idle_and_after_their_lifetime(app: Flask) -> None:
    from appliance import websessions

    sessions = app.extensions["cairn"].accounts.sessions
    now = [1_000_000.0]
    sessions.clock = lambda: now[0]
    idle, _ = sign_in(app, "ops")
    busy, _ = sign_in(app, "ops")
    now[0] += 30
    assert me(app, busy) == 200
    assert _last_seen(app) == {1_000_000.0}  # not written more than once a minute
    for _ in range(int(websessions.LIFETIME // 1800) - 1):  # a request every half hour, for 11.5 h
        now[0] += 1800
        assert me(app, busy) == 200
    assert me(app, idle) == 401  # idle for more than an hour
    now[0] += 1800 - 30
    assert me(app, busy) == 401  # 12 h after sign-in, busy or not


def _last_seen(app: Flask) -> set[float]:
    from engine.catalog.schema import web_sessions

    with app.extensions["cairn"].deployment.catalog.engine.connect() as conn:
        return {row[0] for row in conn.execute(select(web_sessions.c.last_seen))}


def test_the_cookie_is_set_once_and_marked(app: Flask) -> None:
    cookie, _ = sign_in(app, "ops")
    again = bare(app).get("/api/v1/me", headers={"Cookie": cookie})
    assert again.status_code == 200 and not again.headers.getlist("Set-Cookie")  # no sliding re-issue
    plain = app.test_client().post("/api/v1/login", json={"name": "ops", "password": PASSWORD})
    secure = app.test_client().post("/api/v1/login", json={"name": "ops", "password": PASSWORD},
                                    base_url="https://localhost")  # fmt: skip
    for reply, https in ((plain, False), (secure, True)):
        (set_cookie,) = reply.headers.getlist("Set-Cookie")
        attributes = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
        assert "httponly" in attributes and "samesite=lax" in set_cookie.lower()
        assert ("secure" in attributes) is https


def test_flasks_signing_key_cannot_forge_a_session(app: Flask) -> None:
    uid = app.extensions["cairn"].accounts.user("root").id
    forged = app.session_interface.get_signing_serializer(app).dumps({"uid": uid, "csrf": "x"})  # type: ignore[attr-defined]
    assert me(app, f"session={forged}") == 401
    assert app.extensions["cairn"].deployment.catalog.setting("web.secret") is None


@pytest.mark.parametrize(
    "target", ["/\t/evil.example", "//evil.example", "/\\evil.example", "https://evil.example", "http:evil.example",
               "/\n/evil.example", "\t//evil.example", "javascript:alert(1)", "evil.example", ""],
)  # fmt: skip
def test_after_sign_in_only_local_pages(app: Flask, target: str) -> None:
    reply = app.test_client().post("/login", data={"name": "ops", "password": PASSWORD, "next": target})
    assert reply.status_code == 302 and reply.headers["Location"] == "/"
    page = app.test_client().get("/login", query_string={"next": target}).get_data(as_text=True)
    assert 'name="next" value="/"' in page


def test_after_sign_in_a_local_page(app: Flask) -> None:
    reply = app.test_client().post("/login", data={"name": "ops", "password": PASSWORD, "next": "/jobs?x=1"})
    assert reply.headers["Location"] == "/jobs?x=1"


def test_the_upgrade_keeps_accounts_and_stops_reusing_ids(tmp_path: Path, db_url: str) -> None:
    """A catalog made before web sessions: users, their memberships, tokens, sources and jobs survive."""
    catalog = db.open_catalog(db_url, migrate=False)
    try:
        cfg = db.alembic_config()
        with catalog.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0003")
        _old_rows(catalog)
        db.upgrade(catalog)
        assert db.current_revision(catalog) == db.HEAD
        with catalog.engine.connect() as conn:
            assert conn.execute(select(users.c.id, users.c.name).order_by(users.c.id)).all() == [(1, "a"), (2, "b")]
            assert conn.execute(select(memberships.c.user_id, memberships.c.role)).all() == [(2, "admin")]
            assert conn.execute(select(tokens.c.user_id)).scalars().all() == [2]
            assert conn.execute(select(source_access.c.owner_id)).scalars().all() == [1]
            assert conn.execute(select(jobs.c.requested_by)).scalars().all() == [2]
        assert catalog.setting("web.secret") is None
        accounts = Accounts(catalog)
        added = accounts.add_user("c", PASSWORD).id
        accounts.remove_user("c")
        assert accounts.add_user("d", PASSWORD).id > added
        assert accounts.login("b", PASSWORD).name == "b"
    finally:
        catalog.dispose()


def _old_rows(catalog: db.Catalog) -> None:
    from engine.catalog.schema import groups, settings, sources

    with catalog.engine.begin() as conn:
        for name in ("a", "b"):  # ids 1 and 2, from the database (PostgreSQL's sequence must count them)
            conn.execute(users.insert().values(name=name, password=_HASH, admin=False, created=1.0))
        conn.execute(groups.insert().values(id=1, name="g", created=1.0))
        conn.execute(memberships.insert().values(user_id=2, group_id=1, role="admin"))
        conn.execute(tokens.insert().values(user_id=2, name="t", digest=b"d" * 32, created=1.0))
        conn.execute(sources.insert().values(id=1, uuid="u", name="s", created=1.0, next_ino=2))
        conn.execute(source_access.insert().values(source_id=1, group_id=1, owner_id=1))
        conn.execute(jobs.insert().values(kind="gc", params="{}", state="done", created=1.0, requested_by=2))
        conn.execute(settings.insert().values(key="web.secret", value="signing key"))
