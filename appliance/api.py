"""The REST API at /api/v1: JSON in and out, described by /api/v1/openapi.json."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, session

from dav.archive import FORMATS, attachment, tar_zst, zip_archive
from dav.session import Session
from engine.errors import CorruptBlob, InvalidArgument, NotFound
from engine.meta import Kind
from engine.snapshots import SnapshotInfo

from . import auth
from .access import can, manages
from .accounts import User
from .config import Config
from .jobs import Job
from .openapi import SPEC
from .services import Services

api = Blueprint("api", __name__, url_prefix="/api/v1")
EVENT_EVERY = 0.5  # seconds between looks at a job whose events are streamed
EVENTS_FOR = 3600.0  # a stream ends after this long; the browser's EventSource reconnects


def services() -> Services:
    return current_app.extensions["cairn"]  # type: ignore[no-any-return]


def body(required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """The request's JSON object, with exactly the fields allowed."""
    doc = request.get_json(silent=True)
    if not isinstance(doc, dict):
        raise InvalidArgument("the body must be a JSON object")
    unknown = set(doc) - required - optional
    missing = required - set(doc)
    if unknown or missing:
        raise InvalidArgument(
            "; ".join(
                filter(
                    None,
                    [
                        f"unknown fields: {', '.join(sorted(unknown))}" if unknown else "",
                        f"missing fields: {', '.join(sorted(missing))}" if missing else "",
                    ],
                )
            )
        )
    return doc


def opt_text(doc: dict[str, Any], key: str) -> str | None:
    return None if doc.get(key) is None else text(doc, key)


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high]."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidArgument(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise InvalidArgument(f"{key} must be a string")
    return value


def user_json(u: User) -> dict[str, Any]:
    return {"name": u.name, "admin": u.admin, "roles": u.roles}


def snapshot_json(s: SnapshotInfo) -> dict[str, Any]:
    return {"name": s.name, "source": s.source, "created": s.created, "files": s.files, "bytes": s.bytes,
            "state": s.state, "uuid": s.uuid}  # fmt: skip


def allowed_source(name: str, action: str) -> tuple[User, str | None, str | None]:
    """The user, after checking they may `action` the source (404 if they may not even see it)."""
    user = auth.require_user()
    access = services().accounts.source_access()
    if name not in access:
        raise NotFound(f"no source {name!r}")
    group, owner = access[name]
    if not can(user, "see", group, owner):
        raise NotFound(f"no source {name!r}")  # what one may not see does not exist
    if not can(user, action, group, owner):
        raise auth.Forbidden(f"you may not {action} source {name!r}")
    return user, group, owner


def require_admin() -> User:
    user = auth.require_user()
    if not user.admin:
        raise auth.Forbidden("only an administrator may do this")
    return user


# -- signing in --------------------------------------------------------------


@api.get("/openapi.json")
def openapi() -> Response:
    return jsonify(SPEC)


@api.post("/login")
def login() -> Response:
    doc = body({"name", "password"})
    user = auth.login(text(doc, "name"), text(doc, "password"))
    return jsonify({"user": user_json(user), "csrf": session["csrf"]})


@api.post("/logout")
def logout() -> Response:
    auth.current_user()  # a cookie session must show its CSRF token to end itself
    session.clear()
    return jsonify({})


@api.get("/me")
def me() -> Response:
    return jsonify({"user": user_json(auth.require_user()), "csrf": auth.csrf_token()})


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


# -- sources and snapshots ---------------------------------------------------


def visible_sources(user: User) -> list[dict[str, Any]]:
    """The sources a user may see, with their group, owner, and whether the user may run them."""
    access = services().accounts.source_access()
    out = []
    for s in services().deployment.list_sources():
        group, owner = access.get(s.name, (None, None))
        if can(user, "see", group, owner):
            out.append({"name": s.name, "group": group, "owner": owner, "created": s.created,
                        "snapshots": s.snapshots, "last_snapshot": s.last_snapshot,
                        "run": can(user, "run", group, owner)})  # fmt: skip
    return out


@api.get("/sources")
def sources() -> Response:
    return jsonify(visible_sources(auth.require_user()))


@api.post("/sources")
def add_source() -> Response:
    user = auth.require_user()
    doc = body({"name"}, {"group", "owner"})
    group, owner = opt_text(doc, "group"), opt_text(doc, "owner")
    if not manages(user, group):
        raise auth.Forbidden("only an administrator of the group may add sources to it")
    name = text(doc, "name")
    services().deployment.add_source(name)
    services().accounts.assign_source(name, group, owner)
    return jsonify({"name": name, "group": group, "owner": owner}), 201  # type: ignore[return-value]


@api.get("/sources/<name>")
def source(name: str) -> Response:
    allowed_source(name, "see")
    s = services().deployment.source(name)
    return jsonify({"name": s.name, "created": s.created, "snapshots": s.snapshots, "last_snapshot": s.last_snapshot})


@api.delete("/sources/<name>")
def remove_source(name: str) -> Response:
    allowed_source(name, "configure")
    services().deployment.remove_source(name)
    return jsonify({})


@api.get("/sources/<name>/snapshots")
def snapshots(name: str) -> Response:
    allowed_source(name, "see")
    return jsonify([snapshot_json(s) for s in services().deployment.list_snapshots(name)])


@api.post("/sources/<name>/snapshots")
def take_snapshot(name: str) -> Response:
    user, _, _ = allowed_source(name, "run")
    doc = body(set(), {"name"}) if request.content_length else {}
    params = {"source": name, "name": text(doc, "name") if "name" in doc else None}
    job = services().jobs.submit("snapshot", params, source_id=services().deployment.source(name).id, user_id=user.id)
    return jsonify(job.to_json()), 202  # type: ignore[return-value]


@api.get("/sources/<name>/diff")
def diff_snapshots(name: str) -> Response:
    """What changed between two snapshots (`old`, `new`), at most `limit` changes."""
    allowed_source(name, "see")
    return jsonify(changes(name, request.args.get("old", ""), request.args.get("new", ""),
                           int_arg("limit", 1000, 1, 100_000)))  # fmt: skip


def changes(name: str, old: str, new: str, limit: int) -> list[dict[str, Any]]:
    from engine.reader import diff

    dep = services().deployment
    out = []
    for c in diff(dep.snapshot(name, old), dep.snapshot(name, new)):
        entry = c.new or c.old
        out.append({"path": os.fsdecode(c.path), "change": c.change, "size": entry.size if entry else 0})
        if len(out) >= limit:
            break
    return out


@api.delete("/sources/<name>/snapshots/<snap>")
def delete_snapshot(name: str, snap: str) -> Response:
    allowed_source(name, "configure")
    services().deployment.delete_snapshot(name, snap)
    return jsonify({})


@api.post("/sources/<name>/snapshots/<snap>/restore")
def restore_path(name: str, snap: str) -> Response:
    """Bring a path of a snapshot back into current/ (a job; by reference, no bytes copied).

    `to` restores to another path (missing folders are made), `into` into another source's current/.
    """
    doc = body({"path"}, {"to", "into"})
    job = submit_restore(name, snap, text(doc, "path"), opt_text(doc, "to"), opt_text(doc, "into"))
    return jsonify(job.to_json()), 202  # type: ignore[return-value]


def submit_restore(name: str, snap: str, path: str, to: str | None, into: str | None) -> Job:
    """The restore job, once the user may restore from `name` (and into `into`) and the snapshot exists."""
    user, _, _ = allowed_source(name, "restore")
    if into is not None and into != name:
        allowed_source(into, "restore")
    services().deployment.snapshot_info(name, snap)  # 404 now rather than a failed job later
    params = {"source": name, "snapshot": snap, "path": path, "to": to, "into": into}
    return services().jobs.submit("restore", params, source_id=services().deployment.source(name).id, user_id=user.id)


@api.get("/sources/<name>/snapshots/<snap>/entries")
def entries(name: str, snap: str) -> Response:
    allowed_source(name, "see")
    view = services().deployment.snapshot(name, snap)
    entry = view.lookup(os.fsencode(request.args.get("path", "/")))
    if entry.kind != Kind.DIR:
        raise InvalidArgument("not a directory")
    out = [{"name": os.fsdecode(e.name), "kind": Kind(e.kind).name.lower(), "size": e.size, "mode": e.mode,
            "mtime": e.mtime_ns / 1e9} for e in sorted(view.listing(entry).values(), key=lambda e: e.name)]  # fmt: skip
    return jsonify(out)


@api.get("/sources/<name>/snapshots/<snap>/file")
def download(name: str, snap: str) -> Response:
    allowed_source(name, "restore")
    path = os.fsencode(request.args.get("path", ""))
    view = services().deployment.snapshot(name, snap)
    reader = view.reader(view.lookup(path))

    def chunks() -> Iterator[bytes]:
        pos, step = 0, 1 << 20
        while pos < reader.size:
            try:
                data = reader.read(pos, step)
            except CorruptBlob as e:
                raise view.damaged(path, e) from e
            pos += len(data)
            yield data

    filename = os.path.basename(os.fsdecode(path)) or "file"
    headers = {"Content-Length": str(reader.size),
               "Content-Disposition": attachment(filename)}  # fmt: skip
    return Response(chunks(), mimetype="application/octet-stream", headers=headers)


@api.get("/sources/<name>/snapshots/<snap>/archive")
def archive(name: str, snap: str) -> Response:
    """A directory of a snapshot as a streamed zip or tar.zst (the WebDAV share's archives)."""

    allowed_source(name, "restore")
    kind = request.args.get("format", "zip")
    if kind not in FORMATS:
        raise InvalidArgument(f"format is one of {', '.join(FORMATS)}")
    path = request.args.get("path", "/")
    session = Session(services().view)
    top = session.resolve(f"/{name}/snapshots/{snap}/{path.strip('/')}")[-1]
    if top.kind != Kind.DIR:
        session.release()
        raise InvalidArgument("not a directory: download files one by one")
    label = os.path.basename(path.rstrip("/")) or f"{name}-{snap}"

    def stream() -> Iterator[bytes]:
        try:
            yield from (tar_zst if kind == "tar.zst" else zip_archive)(session, top, label)
        finally:
            session.release()

    headers = {"Content-Disposition": attachment(f"{label}.{kind}")}
    return Response(stream(), mimetype=FORMATS[kind], headers=headers)


# -- pool, jobs, maintenance -------------------------------------------------


@api.get("/pool")
def pool() -> Response:
    auth.require_user()
    return jsonify(services().deployment.pool_usage())


@api.post("/pool/<any(gc, scrub):kind>")
def pool_job(kind: str) -> Response:
    user = require_admin()
    return jsonify(services().jobs.submit(kind, {}, user_id=user.id).to_json()), 202  # type: ignore[return-value]


@api.get("/jobs")
def jobs() -> Response:
    user = auth.require_user()
    listed = services().jobs.list(limit=int_arg("limit", 100, 1, 1000))
    mine = [j for j in listed if user.admin or j.requested_by == user.id]
    return jsonify([j.to_json() for j in mine])


@api.get("/jobs/<int(max=9223372036854775807):job_id>")
def job(job_id: int) -> Response:
    user = auth.require_user()
    found = services().jobs.get(job_id)
    if not user.admin and found.requested_by != user.id:
        raise NotFound(f"no job {job_id}")
    return jsonify(found.to_json())


@api.get("/jobs/<int(max=9223372036854775807):job_id>/events")
def job_events(job_id: int) -> Response:
    """Server-sent events: the job's state and progress whenever they change, until it ends."""
    user = auth.require_user()
    queue = services().jobs
    first = queue.get(job_id)
    if not user.admin and first.requested_by != user.id:
        raise NotFound(f"no job {job_id}")

    def events() -> Iterator[str]:
        last = None
        for _ in range(int(EVENTS_FOR / EVENT_EVERY)):
            job = queue.get(job_id)
            doc = json.dumps({"state": job.state, "progress": job.progress, "error": job.error})
            if doc != last:
                yield f"data: {doc}\n\n"
                last = doc
            if job.state in ("done", "failed"):
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
    return jsonify([user_json(u) for u in services().accounts.list_users()])


@api.post("/users")
def add_user() -> Response:
    require_admin()
    doc = body({"name", "password"}, {"admin"})
    user = services().accounts.add_user(text(doc, "name"), text(doc, "password"), admin=doc.get("admin") is True)
    return jsonify(user_json(user)), 201  # type: ignore[return-value]


@api.delete("/users/<name>")
def remove_user(name: str) -> Response:
    me_ = require_admin()
    if name == me_.name:
        raise InvalidArgument("you cannot remove yourself")
    services().accounts.remove_user(name)
    return jsonify({})


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


@api.put("/groups/<group>/members/<member>")
def set_member(group: str, member: str) -> Response:
    user = auth.require_user()
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
    """The effective settings globally, for a group (`group`), or for a source (`source`)."""
    auth.require_user()
    source_name, group = request.args.get("source"), request.args.get("group")
    if source_name:
        _, group, _ = allowed_source(source_name, "see")
    return jsonify(Config(services().deployment.catalog).effective(source_name, group))


def check_may_configure(group: str | None, source_name: str | None) -> User:
    """Settings of a source are its configurers'; a group's are its administrators'; global ones, admins'."""
    user = auth.require_user()
    if source_name is not None:
        allowed_source(source_name, "configure")
    elif not (user.admin or (group is not None and manages(user, group))):
        raise auth.Forbidden("only an administrator may change global or group settings")
    return user


@api.put("/config")
def set_config() -> Response:
    doc = body({"key", "value"}, {"group", "source"})
    group, source_name = opt_text(doc, "group"), opt_text(doc, "source")
    check_may_configure(group, source_name)
    Config(services().deployment.catalog).set(text(doc, "key"), doc["value"], group=group, source=source_name)
    return jsonify({"key": doc["key"], "value": doc["value"], "group": group, "source": source_name})
