"""The REST API's signing in, tokens, pool, jobs, maintenance, users, groups and settings."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, jsonify, request

from engine.errors import InvalidArgument

from .. import auth, usage
from ..access import manages
from ..config import Config, hide_secrets, next_runs
from ..jobs import ENDED
from ..request import (
    allowed_source,
    change_own_password,
    check_may_configure,
    readable_level,
    require_admin,
    services,
    visible_group,
    visible_job,
    visible_jobs,
    visible_sources,
)
from ..shapes import user_doc
from ..words import exact, job_percent, job_summary, when
from .base import api, body, int_arg, opt_text, text
from .openapi import SPEC

EVENT_EVERY = 0.5  # seconds between looks at a job whose events are streamed
EVENTS_FOR = 3600.0  # a stream ends after this long; the browser's EventSource reconnects


# -- signing in --------------------------------------------------------------


@api.get("/openapi.json")
def openapi() -> Response:
    return jsonify(SPEC)


@api.post("/login")
def login() -> Response:
    doc = body({"name", "password"})
    user, session = auth.login(text(doc, "name"), text(doc, "password"))
    return jsonify({"user": user_doc(user), "csrf": session.csrf})


@api.post("/logout")
def logout() -> Response:
    auth.logout()  # a cookie session must show its CSRF token to end itself
    return jsonify({})


@api.post("/me/password")
def change_password() -> Response:
    """A user changes their own password (the current one is asked for, and counted as a sign-in).
    Every other web session of theirs ends; the one that made the change stays signed in."""
    user = auth.require_user()
    doc = body({"password", "new_password"})
    change_own_password(user, text(doc, "password"), text(doc, "new_password"))
    return jsonify({})


@api.get("/me")
def me() -> Response:
    return jsonify({"user": user_doc(auth.require_user()), "csrf": auth.csrf_token()})


@api.get("/tokens")
def tokens() -> Response:
    return jsonify(services().accounts.list_tokens(auth.require_user()))


@api.post("/tokens")
def add_token() -> Response:
    user = auth.require_user()
    name = text(body({"name"}), "name")
    return jsonify({"token": services().accounts.add_token(user, name), "name": name}), 201  # type: ignore[return-value]


@api.delete("/tokens/<int(max=9223372036854775807):token_id>")
def remove_token(token_id: int) -> Response:
    services().accounts.remove_token(auth.require_user(), token_id)
    return jsonify({})


# -- pool, jobs, maintenance -------------------------------------------------


@api.get("/pool")
def pool() -> Response:
    auth.require_user()
    return jsonify(services().deployment.pool_usage())


@api.get("/usage")
def usage_series() -> Response:
    """The pool's bytes, dedup ratio and each visible source's size over the last `days` (7, 30 or 365) days."""
    user = auth.require_user()
    days = int_arg("days", 7, 1, 366)
    seen = {s["name"] for s in visible_sources(user)}
    return jsonify(usage.series(services().deployment, days, seen))


@api.post("/pool/<any(gc, scrub):kind>")
def pool_job(kind: str) -> Response:
    """gc takes `dry_run` and `repack_below` (0-1), as `cairn pool gc` does; scrub takes nothing."""
    user = require_admin()
    doc = body(set(), {"dry_run", "repack_below"} if kind == "gc" else set()) if request.content_length else {}
    params: dict[str, Any] = {}
    if "dry_run" in doc:
        if not isinstance(doc["dry_run"], bool):
            raise InvalidArgument("dry_run must be true or false")
        params["dry_run"] = doc["dry_run"]
    if "repack_below" in doc:
        value = doc["repack_below"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise InvalidArgument("repack_below must be a number from 0 to 1")
        params["repack_below"] = float(value)
    return jsonify(services().jobs.submit(kind, params, user_id=user.id).to_json()), 202  # type: ignore[return-value]


@api.get("/jobs")
def jobs() -> Response:
    return jsonify([j.to_json() for j in visible_jobs(int_arg("limit", 100, 1, 1000))])


@api.get("/jobs/<int(max=9223372036854775807):job_id>")
def job(job_id: int) -> Response:
    return jsonify(visible_job(job_id).to_json())


@api.delete("/jobs/<int(max=9223372036854775807):job_id>")
def cancel_job(job_id: int) -> Response:
    """Cancel a queued job (409 once it runs or has ended)."""
    visible_job(job_id)
    return jsonify(services().jobs.cancel(job_id, auth.require_user().name).to_json())


@api.get("/jobs/<int(max=9223372036854775807):job_id>/events")
def job_events(job_id: int) -> Response:
    """Server-sent events: the job's state, progress and summary in words whenever they change, until it ends."""
    visible_job(job_id)
    queue = services().jobs

    def events() -> Iterator[str]:
        last = None
        for _ in range(int(EVENTS_FOR / EVENT_EVERY)):
            job = queue.get(job_id)
            doc = json.dumps({
                "state": job.state, "progress": job.progress, "error": job.error,
                "summary": job_summary(job.kind, job.params, job.state, job.progress, job.error),
                "percent": job_percent(job.kind, job.state, job.progress),
            })  # fmt: skip
            if doc != last:
                yield f"data: {doc}\n\n"
                last = doc
            if job.state in ENDED:
                return
            time.sleep(EVENT_EVERY)

    return Response(events(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})


@api.get("/maintenance")
def maintenance() -> Response:
    auth.require_user()
    return jsonify({"maintenance": services().deployment.maintenance})


@api.put("/maintenance")
def set_maintenance() -> Response:
    require_admin()
    doc = body({"on"}, {"reason"})
    if not isinstance(doc["on"], bool):
        raise InvalidArgument("on must be true or false")
    reason = (opt_text(doc, "reason") or "maintenance") if doc["on"] else None
    services().deployment.set_maintenance(reason)
    return jsonify({"maintenance": services().deployment.maintenance})


# -- users and groups ----------------------------------------------------------


@api.get("/users")
def users() -> Response:
    require_admin()
    return jsonify([user_doc(u) for u in services().accounts.list_users()])


@api.post("/users")
def add_user() -> Response:
    require_admin()
    doc = body({"name", "password"}, {"admin", "one_time"})
    for flag in ("admin", "one_time"):
        if not isinstance(doc.get(flag, False), bool):
            raise InvalidArgument(f"{flag} must be true or false")
    user = services().accounts.add_user(text(doc, "name"), text(doc, "password"), admin=doc.get("admin") is True,
                                        one_time=doc.get("one_time") is True)  # fmt: skip
    return jsonify(user_doc(user)), 201  # type: ignore[return-value]


@api.delete("/users/<name>")
def remove_user(name: str) -> Response:
    me_ = require_admin()
    if name == me_.name:
        raise InvalidArgument("you cannot remove yourself")
    services().accounts.remove_user(name)
    return jsonify({})


@api.post("/users/<name>/password")
def reset_password(name: str) -> Response:
    """A new one-time password for a user, in this answer only; they choose their own at the next sign-in."""
    require_admin()
    return jsonify({"name": name, "password": services().accounts.reset_password(name)})


@api.put("/users/<name>")
def change_user(name: str) -> Response:
    """Make a user an administrator, or no longer one (never the last one)."""
    require_admin()
    admin = body({"admin"})["admin"]
    if not isinstance(admin, bool):
        raise InvalidArgument("admin must be true or false")
    return jsonify(user_doc(services().accounts.set_admin(name, admin)))


@api.get("/groups")
def groups() -> Response:
    user = auth.require_user()
    every = services().accounts.list_groups()
    return jsonify({g: m for g, m in every.items() if user.admin or g in user.roles})


@api.post("/groups")
def add_group() -> Response:
    require_admin()
    name = text(body({"name"}), "name")
    services().accounts.add_group(name)
    return jsonify({"name": name}), 201  # type: ignore[return-value]


@api.delete("/groups/<group>")
def remove_group(group: str) -> Response:
    """Remove a group: its members lose their roles in it, its sources are held by no group (administrators)."""
    require_admin()
    services().accounts.remove_group(group)
    return jsonify({})


@api.put("/groups/<group>/members/<member>")
def set_member(group: str, member: str) -> Response:
    user = auth.require_user()
    visible_group(user, group)
    if not manages(user, group):
        raise auth.Forbidden(f"only an administrator of group {group!r} may change its members")
    role = body({"role"})["role"]
    if role is not None and not isinstance(role, str):
        raise InvalidArgument("role must be a string or null")
    services().accounts.set_role(group, member, role)
    return jsonify({"group": group, "user": member, "role": role})


# -- settings ------------------------------------------------------------------


@api.get("/sources/<name>/config")
def source_config(name: str) -> Response:
    _, group, _ = allowed_source(name, "see")
    return jsonify(Config(services().deployment.catalog).effective(name, group))


@api.get("/config")
def config_view() -> Response:
    """The effective settings globally, for a group (`group`), or for a source (`source`); secrets hidden."""
    source_name = request.args.get("source") or None
    group = readable_level(request.args.get("group") or None, source_name)
    return jsonify(Config(services().deployment.catalog).effective(source_name, group))


@api.get("/schedule")
def schedule_preview() -> Response:
    """When a cron expression (`cron`) next comes round, in the appliance's local time: for a form, as one types."""
    auth.require_user()
    cron = request.args.get("cron", "")
    runs = next_runs(cron)
    if not runs:
        raise InvalidArgument(f"not a schedule that comes round: {cron!r} (five fields, such as '0 2 * * *')")
    return jsonify({"cron": cron, "next": [{"at": t, "local": when(t), "exact": exact(t)} for t in runs]})


@api.put("/config")
def set_config() -> Response:
    doc = body({"key", "value"}, {"group", "source"})
    group, source_name = opt_text(doc, "group"), opt_text(doc, "source")
    check_may_configure(group, source_name)
    key = text(doc, "key")
    Config(services().deployment.catalog).set(key, doc["value"], group=group, source=source_name)
    return jsonify({"key": key, "value": hide_secrets(key, doc["value"]), "group": group, "source": source_name})
