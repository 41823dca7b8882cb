"""The web UI: server-rendered pages over the same services as the API (no JS build step)."""

from __future__ import annotations

from collections import Counter

from flask import Response, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from engine.check import last_scrub
from engine.gc import last_gc
from engine.sessions import RUNNING, Session
from engine.snapshots import check_name

from .. import auth, usage
from ..access import can
from ..accounts import User
from ..request import (
    allowed_source,
    changes,
    require_admin,
    services,
    visible_jobs,
    visible_sources,
)
from ..status import SourceStatus, statuses
from .base import page, web
from .jobs import job_views


@web.get("/login")
def login() -> str:
    return page("login.html", next=local_target(request.args.get("next")), error=None)


@web.post("/login")
def login_post() -> str | BaseResponse:
    target = local_target(request.form.get("next"))
    try:
        auth.login(request.form.get("name", ""), request.form.get("password", ""))
    except Exception as e:  # shown on the form, never a stack trace
        return page("login.html", next=target, error=str(e) or "wrong name or password")
    return redirect(target)


def local_target(target: str | None) -> str:
    """Where to go after signing in: a path on this site, else the dashboard.

    Browsers drop tabs and newlines from URLs and read a backslash as a slash, so `/<TAB>/evil`,
    `//evil` and `/\\evil` all lead off the site: only "/" followed by something else will do.
    """
    if not target or not target.startswith("/") or any(ord(c) < 0x20 or c == "\x7f" for c in target):
        return "/"
    return target if len(target) == 1 or target[1] not in "/\\" else "/"


@web.post("/logout")
def logout() -> BaseResponse:
    auth.logout()
    return redirect(url_for("web.login"))


@web.get("/")
def dashboard() -> str:
    user = auth.require_user()
    running = visible_jobs(20)
    dep = services().deployment
    status = visible_statuses(user)
    counts = Counter("never" if s.last_backup is None else s.colour for s in status.values())
    pool = dep.pool_usage()
    return page("dashboard.html", sources=visible_sources(user), status=status, counts=counts, pool=pool,
                sizes=dep.source_sizes(), capacity=usage.capacity(dep, pool),
                jobs=job_views([j for j in running if j.state in ("queued", "running")] or running[:5]),
                sessions=visible_sessions(user, 100, RUNNING))  # fmt: skip


def visible_statuses(user: User) -> dict[str, SourceStatus]:
    """The backup status of each source `user` may see, by source name."""
    seen = {s["name"] for s in visible_sources(user)}
    return {s.source: s for s in statuses(services()) if s.source in seen}


def visible_sessions(user: User, limit: int, state: str | None = None) -> list[Session]:
    """Of the last `limit` backup sessions (in `state`), those of sources `user` may see."""
    access = services().accounts.source_access()
    return [s for s in services().sessions.recent(limit=limit, state=state)
            if can(user, "see", *access.get(s.source, (None, None)))]  # fmt: skip


@web.get("/storage")
def storage() -> str:
    user = auth.require_user()
    dep = services().deployment
    disks = services().images.images()
    images = {"disks": len(disks), "bytes": sum(i.size for i in disks),
              "versions": len(services().images.versions())}  # fmt: skip
    return page("storage.html", pool=dep.pool_usage(), scrub=last_scrub(dep.catalog), gc=last_gc(dep.catalog),
                images=images, admin=user.admin)  # fmt: skip


@web.post("/storage/<any(gc, scrub):kind>")
def storage_job(kind: str) -> BaseResponse:
    user = require_admin()
    job = services().jobs.submit(kind, {}, user_id=user.id)
    return redirect(url_for("web.job", job_id=job.id))


@web.post("/storage/maintenance")
def storage_maintenance() -> BaseResponse:
    """Maintenance mode on (with a reason) or off, as `cairn maintenance on|off` does."""
    require_admin()
    on = request.form.get("on") == "yes"
    services().deployment.set_maintenance((request.form.get("reason") or "maintenance") if on else None)
    return redirect(url_for("web.storage"))


@web.get("/sources/<name>/diff")
def diff_page(name: str) -> str:
    allowed_source(name, "see")
    old, new = request.args.get("old", ""), request.args.get("new", "")
    return page("diff.html", source=name, old=old, new=new, changes=changes(name, old, new, 5000))


@web.post("/sources/<name>/snapshots")
def take_snapshot(name: str) -> BaseResponse:
    user, _, _ = allowed_source(name, "run")
    snap = request.form.get("name") or None
    job = services().jobs.submit("snapshot", {"source": name, "name": snap and check_name(snap)},
                                 source_id=services().deployment.source(name).id, user_id=user.id)  # fmt: skip
    return redirect(url_for("web.job", job_id=job.id))


@web.get("/jobs")
def jobs() -> str:
    return page("jobs.html", jobs=job_views(visible_jobs(100)), sessions=visible_sessions(auth.require_user(), 100))


@web.get("/healthz")
def health() -> Response:
    return Response("ok\n", mimetype="text/plain")
