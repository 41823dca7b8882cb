"""The `cairn` command. Local commands work on a data directory (`--data`)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from engine.backup import backup_and_snapshot
from engine.errors import CairnError
from engine.meta import Kind
from engine.pool import POOL_FILE
from engine.reader import diff

from ..shapes import snapshot_doc
from ..words import job_summary
from . import output
from .base import EXIT_PARTIAL, Context, command, main, source
from .target import target

__all__ = ["main"]


@command(main, "init")
@click.option("--encrypt", is_flag=True, help="Encrypt the pool (AES-256-GCM); needs a passphrase or key file.")
def init(ctx: Context, encrypt: bool, as_json: bool) -> None:
    """Create the deployment: catalog and pool in the data directory."""
    if (ctx.data / "pool" / POOL_FILE).exists():
        raise CairnError(f"{ctx.data} already holds a deployment")
    if encrypt and ctx.unlock() is None:
        raise CairnError("--encrypt needs --passphrase-file, --key-file or $CAIRN_PASSPHRASE")
    with ctx.open(encrypt=encrypt) as dep:
        doc = {"data": str(ctx.data), "encrypted": dep.pool.keys.encrypted, "pool": dep.backend.describe()}
    output.emit_json(doc) if as_json else output.say(
        f"deployment created in {ctx.data}" + (" (encrypted)" if encrypt else "")
    )


@command(source, "add")
@click.argument("name")
def source_add(ctx: Context, name: str, as_json: bool) -> None:
    """Add a source."""
    with target(ctx) as t:
        doc = t.add_source(name)
    output.emit_json(doc) if as_json else output.say(f"source {name} added")


@command(source, "list")
def source_list(ctx: Context, as_json: bool) -> None:
    """List sources."""
    with target(ctx) as t:
        rows = t.sources()
    if as_json:
        output.emit_json(rows)
    else:
        output.table(rows, ["name", "group", "owner", "snapshots", "last_snapshot", "created"])


@command(source, "remove")
@click.argument("name")
def source_remove(ctx: Context, name: str, as_json: bool) -> None:
    """Remove a source that has no snapshots."""
    with ctx.open() as dep:
        dep.remove_source(name)
    output.emit_json({"removed": name}) if as_json else output.say(f"source {name} removed")


@main.group()
def snapshot() -> None:
    """Snapshots: frozen, read-only trees of a source."""


@command(snapshot, "create")
@click.argument("source_name", metavar="SOURCE")
@click.argument("name", required=False)
def snapshot_create(ctx: Context, source_name: str, name: str | None, as_json: bool) -> None:
    """Freeze SOURCE's working tree as a snapshot (once no backup session writes into it)."""
    with target(ctx) as t:
        doc = t.take_snapshot(source_name, name, not as_json)
    if as_json:
        output.emit_json(doc)
        return
    output.say(f"snapshot {doc['snapshot']} of {source_name} created")
    if doc["deleted"]:
        output.say(f"retention deleted {len(doc['deleted'])}: {', '.join(doc['deleted'])}")


@command(snapshot, "list")
@click.argument("source_name", metavar="[SOURCE]", required=False)
def snapshot_list(ctx: Context, source_name: str | None, as_json: bool) -> None:
    """List snapshots, of one source or all."""
    with target(ctx) as t:
        rows = t.snapshots(source_name)
    if as_json:
        output.emit_json(rows)
        return
    output.table([{**r, "size": output.human_bytes(r["bytes"])} for r in rows],
                 ["source", "name", "created", "files", "size", "state"])  # fmt: skip


def _entry_row(path: bytes, e: Any) -> dict[str, Any]:
    return {
        "path": os.fsdecode(path), "kind": Kind(e.kind).name.lower(), "mode": f"{e.mode:04o}",
        "uid": e.uid, "gid": e.gid, "size": e.size, "mtime_ns": e.mtime_ns,
    }  # fmt: skip


@command(snapshot, "show")
@click.argument("source_name", metavar="SOURCE")
@click.argument("name")
@click.argument("path", required=False, default="")
def snapshot_show(ctx: Context, source_name: str, name: str, path: str, as_json: bool) -> None:
    """Show a snapshot and list PATH in it."""
    with ctx.open() as dep:
        info = dep.snapshot_info(source_name, name)
        view = dep.snapshot(source_name, name)
        rel = os.fsencode(path)
        entry = view.lookup(rel)
        entries = view.listdir(rel) if entry.is_dir else [entry]
        rows = [_entry_row(e.name, e) for e in entries]
    if as_json:
        output.emit_json({"snapshot": snapshot_doc(info), "entries": rows})
        return
    output.say(f"snapshot {info.name} of {info.source}: {info.files} files, {output.human_bytes(info.bytes)}")
    output.table(rows, ["kind", "mode", "uid", "gid", "size", "path"])


@command(snapshot, "diff")
@click.argument("source_name", metavar="SOURCE")
@click.argument("old")
@click.argument("new")
def snapshot_diff(ctx: Context, source_name: str, old: str, new: str, as_json: bool) -> None:
    """What changed from snapshot OLD to NEW."""
    with ctx.open() as dep:
        changes = [
            {"change": c.change, "path": os.fsdecode(c.path)}
            for c in diff(dep.snapshot(source_name, old), dep.snapshot(source_name, new))
        ]
    if as_json:
        output.emit_json(changes)
        return
    marks = {"added": "+", "removed": "-", "modified": "M"}
    for c in changes:
        output.say(f"{marks[c['change']]} {c['path']}")


@command(snapshot, "search")
@click.argument("source_name", metavar="SOURCE")
@click.argument("query")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000), help="Paths to show at most.")
def snapshot_search(ctx: Context, source_name: str, query: str, limit: int, as_json: bool) -> None:
    """Find paths in any snapshot of SOURCE whose name holds QUERY (with * or ?: matches it)."""
    if not query.strip():
        raise click.UsageError("give a name, or a part of one, to search for")
    with target(ctx) as t:
        doc = t.search(source_name, query.strip(), limit)
    if as_json:
        output.emit_json(doc)
        return
    rows = [{**r, "size": "" if r["kind"] == "dir" else output.human_bytes(r["size"]),
             "snapshots": r["first"] if r["first"] == r["last"] else f"{r['first']} to {r['last']}"}
            for r in doc["results"]]  # fmt: skip
    output.table(rows, ["kind", "size", "versions", "snapshots", "path"])
    if doc["more"]:
        output.say(f"(more than {limit} paths match; type more of the name, or raise --limit)")


@command(snapshot, "delete")
@click.argument("source_name", metavar="SOURCE")
@click.argument("name")
def snapshot_delete(ctx: Context, source_name: str, name: str, as_json: bool) -> None:
    """Delete a snapshot (its space returns after garbage collection)."""
    with target(ctx) as t:
        doc = t.delete_snapshot(source_name, name)
    output.emit_json(doc) if as_json else output.say(f"snapshot {name} of {source_name} deleted")


@command(main, "backup")
@click.argument("source_name", metavar="SOURCE")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--snapshot", "name", help="Name of the snapshot (default: the time, UTC).")
def backup_cmd(ctx: Context, source_name: str, path: str, name: str | None, as_json: bool) -> None:
    """Back up a local directory into SOURCE and snapshot it."""
    with ctx.open() as dep, output.progress_bar(not as_json, "backup") as bar:
        if source_name not in {s.name for s in dep.list_sources()}:
            dep.add_source(source_name)

        def show(stats: Any) -> None:
            bar(f"{stats.files} files, {stats.changed} changed, {output.human_bytes(stats.bytes_read)} read")

        info, stats = backup_and_snapshot(dep, source_name, path, name, show)
    doc = {"snapshot": snapshot_doc(info), "files": stats.files, "dirs": stats.dirs, "changed": stats.changed,
           "removed": stats.removed, "bytes_read": stats.bytes_read, "errors": stats.errors}  # fmt: skip
    if as_json:
        output.emit_json(doc)
    else:
        for e in stats.errors:
            output.warn(e)
        output.say(
            f"snapshot {info.name} of {source_name}: {stats.files} files, {stats.changed} changed, "
            f"{output.human_bytes(stats.bytes_read)} read"
        )
    if stats.errors:
        sys.exit(EXIT_PARTIAL)


@command(main, "restore")
@click.argument("source_name", metavar="SOURCE")
@click.argument("snapshot_name", metavar="SNAPSHOT")
@click.argument("args", nargs=-1, required=True, metavar="[PATH] DEST | PATH --in-place")
@click.option("--in-place", is_flag=True, help="Restore PATH into current/ on the appliance, by reference.")
@click.option("--to", "to", metavar="PATH", help="With --in-place: where in current/ (default: PATH itself).")
@click.option("--into", "into", metavar="SOURCE", help="With --in-place: into another source's current/.")
@click.option("--overwrite", is_flag=True, help="Replace what exists at the destination (else refused).")
def restore_cmd(
    ctx: Context, source_name: str, snapshot_name: str, args: tuple[str, ...], in_place: bool,
    to: str | None, into: str | None, overwrite: bool, as_json: bool,
) -> None:  # fmt: skip
    """Restore a snapshot, or PATH in it, to DEST with all metadata; or PATH into current/ (--in-place).

    What exists at the destination is never replaced without --overwrite.
    """
    if in_place:
        if len(args) != 1:
            raise click.UsageError("expected PATH with --in-place")
        return in_place_restore(ctx, source_name, snapshot_name, args[0], to, into, overwrite, as_json)
    if to or into:
        raise click.UsageError("--to and --into go with --in-place")
    if len(args) > 2:
        raise click.UsageError("expected [PATH] DEST")
    path, dest = (args[0], args[1]) if len(args) == 2 else ("", args[0])
    with target(ctx) as t:
        doc = t.restore(source_name, snapshot_name, path, dest, overwrite, not as_json)
    if as_json:
        output.emit_json(doc)
    else:
        for e in doc["errors"]:
            output.warn(e)
        output.say(job_summary("restore", {}, "done", {**doc, "to": dest}, None))
        if doc["damaged"]:
            output.warn(f"{len(doc['damaged'])} paths not restored: their data could not be read from the pool")
    if doc["errors"] or doc["damaged"]:
        sys.exit(EXIT_PARTIAL)


def in_place_restore(
    ctx: Context, source: str, snap: str, path: str, to: str | None, into: str | None, overwrite: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """PATH of a snapshot back into a working tree: no bytes copied, as the web UI's restore does."""
    with target(ctx) as t:
        doc = t.restore_in_place(source, snap, path, to, into, overwrite, not as_json)
    if as_json:
        output.emit_json(doc)
    else:
        output.say(job_summary("restore", {}, "done", doc, None))


@command(main, "mount")
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@click.option("--debug", is_flag=True, help="Log every FUSE request.")
def mount_cmd(ctx: Context, mountpoint: Path, debug: bool, as_json: bool) -> None:
    """Mount sources and snapshots at MOUNTPOINT (runs in the foreground)."""
    from engine.mount import MountView
    from image.mountfs import MountImages
    from image.pool import ImagePool
    from vfs.mount import serve

    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with ctx.open() as dep:
        dep.start_flusher()
        images = ImagePool(dep)
        try:
            serve(MountView(dep, MountImages(images)), mountpoint, debug=debug)
        finally:
            images.close()


@command(main, "dav")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to serve on.")
@click.option(
    "--data", "data", type=click.Path(file_okay=False, path_type=Path), help="The data directory (as cairn --data)."
)
@click.option("--users", type=click.Path(dir_okay=False, path_type=Path), help="User list, as `cairn dav-user` writes.")
@click.option("--anonymous", is_flag=True, help="Serve without authentication (not the default).")
def dav_cmd(ctx: Context, listen: str, data: Path | None, users: Path | None, anonymous: bool, as_json: bool) -> None:
    """Serve sources and snapshots over WebDAV (runs in the foreground)."""
    from dav.app import make_app, parse_listen, serve
    from dav.auth import load_users
    from engine.mount import MountView

    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--listen") from None
    user_list = load_users(users) if users else {}
    if not user_list and not anonymous:
        raise click.UsageError("give --users FILE (see `cairn dav-user`) or --anonymous")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with (Context(data, ctx.db, ctx.passphrase_file, ctx.key_file) if data else ctx).open() as dep:
        dep.start_flusher()
        serve(make_app(MountView(dep), user_list, anonymous=anonymous), host, port)


@command(main, "dav-user")
@click.argument("users", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def dav_user(ctx: Context, users: Path, name: str, password_stdin: bool, as_json: bool) -> None:
    """Add NAME to the WebDAV user list FILE, or change their password."""
    from dav.auth import save_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.UsageError("the password is empty")
    save_user(users, name, password)
    output.emit_json({"user": name, "file": str(users)}) if as_json else output.say(f"user {name} saved in {users}")


# The other command modules register themselves on `main` when imported.
from . import admin, doors, image, pool, remote  # noqa: E402, F401
