"""The web UI's snapshots: browsing a folder (breadcrumbs, paged, filtered), searching every snapshot by
name, a file's versions across the snapshots, and restores that say what they will do before they do it.

Seeing a source lets one browse it; restoring from it lets one download, restore, and see the
restore's confirmation page. A restore names its path (never the whole tree by default), and what it
would replace in current/ is shown; replacing needs its own checkbox.
"""

from __future__ import annotations

import os
from typing import Any

from flask import redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from engine.errors import CairnError, InvalidArgument, NotFound
from engine.meta import Kind, kind_of

from ..access import can
from ..request import allowed_source, client_host, find_names, services, submit_restore, visible_sources
from ..shapes import found_doc
from ..words import human_bytes
from .base import page, web
from .doors import client_restore

PAGE = 200  # entries a page of a folder shows
HISTORY = 1000  # snapshots a file's history looks through


def crumbs(path: str) -> list[tuple[str, str]]:
    """(name, path) of each folder on the way to `path`, the root first."""
    out, so_far = [("/", "/")], ""
    for part in [p for p in path.split("/") if p]:
        so_far += "/" + part
        out.append((part, so_far))
    return out


@web.get("/sources/<name>/snapshots/<snap>/")
def browse(name: str, snap: str) -> str:
    user, group, owner = allowed_source(name, "see")
    path = "/" + request.args.get("path", "/").strip("/")
    wanted = request.args.get("q", "").strip().lower()
    view = services().deployment.snapshot(name, snap)
    listing = sorted(view.listing(view.lookup(os.fsencode(path))).values(), key=lambda e: (e.kind != Kind.DIR, e.name))
    if wanted:
        listing = [e for e in listing if wanted in os.fsdecode(e.name).lower()]
    pages = max(1, -(-len(listing) // PAGE))
    number = min(max(1, _int(request.args.get("page"), 1)), pages)
    rows = [{"name": os.fsdecode(e.name), "dir": e.kind == Kind.DIR, "size": e.size, "mtime": e.mtime_ns / 1e9,
             "path": (path.rstrip("/") + "/" + os.fsdecode(e.name)), "kind": Kind(e.kind).name.lower()}
            for e in listing[(number - 1) * PAGE : number * PAGE]]  # fmt: skip
    return page("browse.html", source=name, snapshot=snap, path=path, crumbs=crumbs(path), rows=rows, q=wanted,
                page_number=number, pages=pages, total=len(listing),
                restore=can(user, "restore", group, owner))  # fmt: skip


@web.get("/sources/<name>/history")
def history(name: str) -> str:
    """Every snapshot holding `path`, newest first, marked where the file changed from the older one."""
    user, group, owner = allowed_source(name, "see")
    path = "/" + request.args.get("path", "").strip("/")
    if path == "/":
        raise InvalidArgument("give the path of a file or folder")
    dep = services().deployment
    versions: list[dict[str, Any]] = []
    before = None  # what the path was in the last snapshot that held it
    for info in sorted(dep.list_snapshots(name), key=lambda s: s.created)[-HISTORY:]:
        try:
            e = dep.snapshot(name, info.name).lookup(os.fsencode(path))
        except CairnError:
            continue  # not in that snapshot
        now = (e.kind, e.size, e.mtime_ns, e.payload)
        versions.append({"snapshot": info.name, "created": info.created, "size": e.size, "mtime": e.mtime_ns / 1e9,
                         "kind": Kind(e.kind).name.lower(), "changed": now != before})  # fmt: skip
        before = now
    if not versions:
        raise NotFound(f"{path} is in no snapshot of {name}")
    return page("history.html", source=name, path=path, versions=versions[::-1], crumbs=crumbs(path),
                restore=can(user, "restore", group, owner))  # fmt: skip


@web.get("/sources/<name>/search")
def search(name: str) -> str:
    """Paths in any snapshot of the source whose name holds what was typed, each with its versions."""
    allowed_source(name, "see")
    wanted = request.args.get("q", "").strip()
    doc: dict[str, Any] = found_doc(*find_names(name, wanted)) if wanted else {"results": [], "more": False}
    rows = [{**r, "folder": os.path.dirname(r["path"]) or "/"} for r in doc["results"]]  # the API's shape
    return page("search.html", source=name, q=wanted, rows=rows, more=doc["more"])


@web.get("/sources/<name>/snapshots/<snap>/restore")
def confirm_restore(name: str, snap: str) -> str:
    """What a restore will do: the path, where it goes, and what it would replace there."""
    user, _, _ = allowed_source(name, "restore")
    path = "/" + request.args.get("path", "").strip("/")
    to, into = request.args.get("to") or path, request.args.get("into") or name
    if path == "/" and not request.args.get("whole"):
        raise InvalidArgument("name what to restore: a restore never takes the whole snapshot by default")
    allowed_source(into, "restore")
    entry = services().deployment.snapshot(name, snap).lookup(os.fsencode(path))
    targets = [s["name"] for s in visible_sources(user) if can(user, "restore", s["group"], s["owner"])]
    onto_client = client_restore(name, client_host(), services().doors, snap, path, entry.kind == Kind.DIR)
    return page("restore.html", source=name, snapshot=snap, path=path, to=to, into=into, targets=targets,
                kind=Kind(entry.kind).name.lower(), size=entry.size, replaced=_there(into, to),
                onto_client=onto_client)  # fmt: skip


@web.post("/sources/<name>/snapshots/<snap>/restore")
def restore_path(name: str, snap: str) -> BaseResponse:
    """Restore a path in place, or to another path (`to`) of this or another source's current/ (`into`)."""
    form = request.form
    job = submit_restore(name, snap, form.get("path", ""), form.get("to") or None, form.get("into") or None,
                         form.get("overwrite") == "1")  # fmt: skip
    return redirect(url_for("web.job", job_id=job.id))


def _there(source: str, dest: str) -> str | None:
    """What is at `dest` in the source's current/ now, in words; None if nothing is."""
    tree = services().deployment.working_tree(source)
    try:
        st = tree.stat(tree.resolve(os.fsencode(dest).strip(b"/")))
    except CairnError:
        return None
    what = (
        "a folder" if kind_of(st.mode) == Kind.DIR else f"a {kind_of(st.mode).name.lower()} of {human_bytes(st.size)}"
    )
    return f"{source}/current{dest} exists: {what}"


def _int(raw: str | None, default: int) -> int:
    return int(raw) if raw and raw.isdigit() and len(raw) < 10 else default
