"""The REST API's sources and snapshots: list, take, delete, browse, search, download, archive, restore, diff."""

from __future__ import annotations

import os
from collections.abc import Iterator

from flask import Response, jsonify, request

from dav.archive import FORMATS, attachment, tar_zst, zip_archive
from dav.session import Session
from engine.errors import CorruptBlob, InvalidArgument
from engine.meta import Kind
from engine.snapshots import check_name

from .. import auth
from ..access import manages
from ..request import (
    allowed_source,
    changes,
    find_names,
    require_admin,
    services,
    submit_restore,
    visible_group,
    visible_sources,
)
from ..shapes import found_doc, snapshot_doc, source_doc
from .base import api, body, int_arg, opt_text, text

# -- sources and snapshots ---------------------------------------------------


@api.get("/sources")
def sources() -> Response:
    return jsonify(visible_sources(auth.require_user()))


@api.post("/sources")
def add_source() -> Response:
    user = auth.require_user()
    doc = body({"name"}, {"group", "owner"})
    group, owner = opt_text(doc, "group"), opt_text(doc, "owner")
    if group is not None:
        visible_group(user, group)  # and a clear 404 for a group that does not exist, before anything is made
    if not manages(user, group):
        raise auth.Forbidden("only an administrator of the group may add sources to it")
    name = text(doc, "name")
    if owner is not None:
        services().accounts.user(owner)
    info = services().deployment.add_source(name)
    services().accounts.assign_source(name, group, owner)
    return jsonify(source_doc(info, group, owner)), 201  # type: ignore[return-value]


@api.get("/sources/<name>")
def source(name: str) -> Response:
    _, group, owner = allowed_source(name, "see")
    return jsonify(source_doc(services().deployment.source(name), group, owner))


@api.delete("/sources/<name>")
def remove_source(name: str) -> Response:
    user, group, _ = allowed_source(name, "see")
    if not manages(user, group):
        raise auth.Forbidden(f"only an administrator of the group holding source {name!r} may remove it")
    services().deployment.remove_source(name)
    return jsonify({})


@api.put("/sources/<name>/access")
def set_access(name: str) -> Response:
    """Which group holds a source and who owns it (null: none); global administrators only."""
    allowed_source(name, "see")
    require_admin("only an administrator may move a source between groups or give it an owner")
    doc = body({"group", "owner"})
    group, owner = opt_text(doc, "group"), opt_text(doc, "owner")
    services().accounts.assign_source(name, group, owner)
    return jsonify({"name": name, "group": group, "owner": owner})


@api.get("/sources/<name>/snapshots")
def snapshots(name: str) -> Response:
    allowed_source(name, "see")
    return jsonify([snapshot_doc(s) for s in services().deployment.list_snapshots(name)])


@api.post("/sources/<name>/snapshots")
def take_snapshot(name: str) -> Response:
    user, _, _ = allowed_source(name, "run")
    doc = body(set(), {"name"}) if request.content_length else {}
    params = {"source": name, "name": check_name(text(doc, "name")) if "name" in doc else None}
    job = services().jobs.submit("snapshot", params, source_id=services().deployment.source(name).id, user_id=user.id)
    return jsonify(job.to_json()), 202  # type: ignore[return-value]


@api.get("/sources/<name>/diff")
def diff_snapshots(name: str) -> Response:
    """What changed between two snapshots (`old`, `new`), at most `limit` changes."""
    allowed_source(name, "see")
    return jsonify(changes(name, request.args.get("old", ""), request.args.get("new", ""),
                           int_arg("limit", 1000, 1, 100_000)))  # fmt: skip


@api.get("/sources/<name>/search")
def search(name: str) -> Response:
    """Paths in any snapshot of the source whose name holds `q` (or matches it, with * and ?)."""
    allowed_source(name, "see")
    return jsonify(found_doc(*find_names(name, request.args.get("q", ""), int_arg("limit", 100, 1, 1000))))


@api.delete("/sources/<name>/snapshots/<snap>")
def delete_snapshot(name: str, snap: str) -> Response:
    allowed_source(name, "configure")
    services().deployment.delete_snapshot(name, snap)
    return jsonify({})


@api.post("/sources/<name>/snapshots/<snap>/restore")
def restore_path(name: str, snap: str) -> Response:
    """Bring a path of a snapshot back into current/ (a job; by reference, no bytes copied).

    `to` restores to another path (missing folders are made), `into` into another source's current/.
    A path that exists there is replaced only with `overwrite` (else 409).
    """
    doc = body({"path"}, {"to", "into", "overwrite"})
    overwrite = doc.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise InvalidArgument("overwrite must be true or false")
    job = submit_restore(name, snap, text(doc, "path"), opt_text(doc, "to"), opt_text(doc, "into"), overwrite)
    return jsonify(job.to_json()), 202  # type: ignore[return-value]


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
    """A directory of a snapshot as a streamed zip or tar.zst (the WebDAV share's archives).

    `damaged=list` (tar.zst): a file that cannot be read is named right after it instead of ending the archive.
    """

    allowed_source(name, "restore")
    kind = request.args.get("format", "zip")
    if kind not in FORMATS:
        raise InvalidArgument(f"format is one of {', '.join(FORMATS)}")
    path = request.args.get("path", "/")
    session = Session(services().view)
    top = session.resolve(f"/{name}/snapshots/{snap}/{path.strip('/')}")[-1]
    if top.kind != Kind.DIR and kind != "tar.zst":
        session.release()
        raise InvalidArgument("not a directory: download files one by one, or as tar.zst")
    label = os.path.basename(path.rstrip("/")) or f"{name}-{snap}"
    list_damaged = request.args.get("damaged") == "list" and kind == "tar.zst"

    def stream() -> Iterator[bytes]:
        try:
            if kind == "tar.zst":
                yield from tar_zst(session, top, label, list_damaged)
            else:
                yield from zip_archive(session, top, label)
        finally:
            session.release()

    headers = {"Content-Disposition": attachment(f"{label}.{kind}")}
    return Response(stream(), mimetype=FORMATS[kind], headers=headers)
