"""The web UI: server-rendered pages over the same services as the API (no JS build step)."""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from engine.check import last_scrub
from engine.meta import Kind

from . import auth, usage
from .access import can
from .api import allowed_source, changes, visible_sources
from .services import Services

web = Blueprint("web", __name__, template_folder="templates", static_folder="static")


def services() -> Services:
    return current_app.extensions["cairn"]  # type: ignore[no-any-return]


def page(template: str, **context: Any) -> str:
    return render_template(template, user=auth.current_user(), csrf=auth.csrf_token(), **context)


@web.get("/login")
def login() -> str:
    return page("login.html", next=request.args.get("next", "/"), error=None)


@web.post("/login")
def login_post() -> str | BaseResponse:
    try:
        auth.login(request.form.get("name", ""), request.form.get("password", ""))
    except Exception as e:  # shown on the form, never a stack trace
        return page("login.html", next=request.form.get("next", "/"), error=str(e) or "wrong name or password")
    target = request.form.get("next", "/")
    return redirect(target if target.startswith("/") and not target.startswith("//") else "/")


@web.post("/logout")
def logout() -> BaseResponse:
    auth.current_user()  # checks the CSRF token
    from flask import session

    session.clear()
    return redirect(url_for("web.login"))


@web.get("/")
def dashboard() -> str:
    user = auth.require_user()
    running = [j for j in services().jobs.list(limit=20) if user.admin or j.requested_by == user.id]
    dep = services().deployment
    return page("dashboard.html", sources=visible_sources(user), pool=dep.pool_usage(), jobs=running[:10],
                chart=usage.chart(usage.history(dep)))  # fmt: skip


@web.get("/storage")
def storage() -> str:
    user = auth.require_user()
    dep = services().deployment
    return page("storage.html", pool=dep.pool_usage(), scrub=last_scrub(dep.catalog), admin=user.admin)


@web.post("/storage/<any(gc, scrub):kind>")
def storage_job(kind: str) -> BaseResponse:
    user = auth.require_user()
    if not user.admin:
        raise auth.Forbidden("only an administrator may do this")
    job = services().jobs.submit(kind, {}, user_id=user.id)
    return redirect(url_for("web.job", job_id=job.id))


@web.get("/users")
def users() -> str:
    user = auth.require_user()
    if not user.admin:
        raise auth.Forbidden("only an administrator may see every user")
    return page("users.html", people=services().accounts.list_users(), groups=services().accounts.list_groups())


@web.post("/users")
def users_post() -> BaseResponse:
    """The users page's forms: add a user, add a group, give a role (administrators)."""
    user = auth.require_user()
    if not user.admin:
        raise auth.Forbidden("only an administrator may change users and groups")
    accounts, form = services().accounts, request.form
    action = form.get("action")
    if action == "add-user":
        accounts.add_user(form.get("name", ""), form.get("password", ""), admin=form.get("admin") == "on")
    elif action == "add-group":
        accounts.add_group(form.get("name", ""))
    elif action == "set-role":
        role = form.get("role", "none")
        accounts.set_role(form.get("group", ""), form.get("user", ""), None if role == "none" else role)
    else:
        from engine.errors import InvalidArgument

        raise InvalidArgument("unknown action")
    return redirect(url_for("web.users"))


@web.get("/settings")
def settings_page() -> str:
    user = auth.require_user()
    from .config import Config

    return page("settings.html", shown=Config(services().deployment.catalog).effective(), admin=user.admin,
                error=request.args.get("error"))  # fmt: skip


@web.post("/settings")
def settings_post() -> BaseResponse:
    """Set a global value (administrators); the value is JSON, as `cairn config set` takes it."""
    import json

    from engine.errors import InvalidArgument

    from .config import Config

    user = auth.require_user()
    if not user.admin:
        raise auth.Forbidden("only an administrator may change global settings")
    try:
        value = json.loads(request.form.get("value", ""))
        Config(services().deployment.catalog).set(request.form.get("key", ""), value)
    except (ValueError, InvalidArgument) as e:
        return redirect(url_for("web.settings_page", error=str(e)))
    return redirect(url_for("web.settings_page"))


@web.get("/sources/<name>")
def source(name: str) -> str:
    user, group, owner = allowed_source(name, "see")
    snaps = services().deployment.list_snapshots(name)
    return page("source.html", source=name, group=group, owner=owner, snapshots=list(reversed(snaps)),
                run=can(user, "run", group, owner))  # fmt: skip


@web.get("/sources/<name>/diff")
def diff_page(name: str) -> str:
    allowed_source(name, "see")
    old, new = request.args.get("old", ""), request.args.get("new", "")
    return page("diff.html", source=name, old=old, new=new, changes=changes(name, old, new, 5000))


@web.post("/sources/<name>/snapshots")
def take_snapshot(name: str) -> BaseResponse:
    user, _, _ = allowed_source(name, "run")
    job = services().jobs.submit("snapshot", {"source": name, "name": request.form.get("name") or None},
                                 source_id=services().deployment.source(name).id, user_id=user.id)  # fmt: skip
    return redirect(url_for("web.job", job_id=job.id))


@web.get("/sources/<name>/snapshots/<snap>/")
def browse(name: str, snap: str) -> str:
    user, group, owner = allowed_source(name, "see")
    path = request.args.get("path", "/")
    view = services().deployment.snapshot(name, snap)
    entry = view.lookup(os.fsencode(path))
    listing = sorted(view.listing(entry).values(), key=lambda e: (e.kind != Kind.DIR, e.name))
    rows = [{"name": os.fsdecode(e.name), "dir": e.kind == Kind.DIR, "size": e.size,
             "path": (path.rstrip("/") + "/" + os.fsdecode(e.name)), "kind": Kind(e.kind).name.lower()}
            for e in listing]  # fmt: skip
    parent = os.path.dirname(path.rstrip("/")) or "/"
    return page("browse.html", source=name, snapshot=snap, path=path, parent=parent, rows=rows,
                restore=can(user, "restore", group, owner))  # fmt: skip


@web.post("/sources/<name>/snapshots/<snap>/restore")
def restore_path(name: str, snap: str) -> BaseResponse:
    user, _, _ = allowed_source(name, "restore")
    params = {"source": name, "snapshot": snap, "path": request.form.get("path", "/"), "to": None}
    job = services().jobs.submit("restore", params, source_id=services().deployment.source(name).id, user_id=user.id)
    return redirect(url_for("web.job", job_id=job.id))


@web.get("/jobs")
def jobs() -> str:
    user = auth.require_user()
    listed = [j for j in services().jobs.list(limit=100) if user.admin or j.requested_by == user.id]
    return page("jobs.html", jobs=listed)


@web.get("/jobs/<int(max=9223372036854775807):job_id>")
def job(job_id: int) -> str:
    user = auth.require_user()
    found = services().jobs.get(job_id)
    if not user.admin and found.requested_by != user.id:
        from engine.errors import NotFound

        raise NotFound(f"no job {job_id}")
    return page("job.html", job=found)


@web.get("/healthz")
def health() -> Response:
    return Response("ok\n", mimetype="text/plain")
