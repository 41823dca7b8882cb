"""The `cairn` command. Local commands work on a data directory (`--data`)."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from engine.backup import backup_and_snapshot
from engine.catalog import open_catalog
from engine.check import check_pool, describe, filesystem_of, last_scrub, locate, pool_path, record_scrub
from engine.codec import FORMATS, CodecConfig
from engine.deployment import Deployment, default_db_url
from engine.errors import CairnError
from engine.gc import REPACK_BELOW, collect
from engine.keyring import Unlock
from engine.meta import Kind
from engine.pool import POOL_FILE, check_identity
from engine.reader import diff
from engine.rebuild import rebuild
from engine.restore import restore
from engine.storage import open_backend

from . import output

F = TypeVar("F", bound=Callable[..., Any])
EXIT_ERROR = 1
EXIT_PARTIAL = 3  # finished, but some files or blobs had problems


class Context:
    def __init__(self, data: Path, db: str | None, passphrase_file: Path | None, key_file: Path | None):
        self.data = data
        self.db = db
        self.passphrase_file = passphrase_file
        self.key_file = key_file

    def unlock(self) -> Unlock | None:
        """What opens an encrypted pool: a key file, a passphrase file, or $CAIRN_PASSPHRASE."""
        if self.key_file is not None:
            return Unlock(key_file=self.key_file.read_bytes())
        if self.passphrase_file is not None:
            return Unlock(passphrase=self.passphrase_file.read_bytes().rstrip(b"\r\n"))
        passphrase = os.environ.get("CAIRN_PASSPHRASE")
        return Unlock(passphrase=passphrase.encode()) if passphrase else None

    def open(self, *, encrypt: bool = False) -> Deployment:
        return Deployment.open(self.data, self.db, unlock=self.unlock(), encrypt=encrypt)


def command(group: click.Group, name: str | None = None) -> Callable[[F], F]:
    """A subcommand with `--json`, whose engine errors become clean messages."""

    def wrap(fn: F) -> F:
        @group.command(name)
        @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
        @click.pass_obj
        @functools.wraps(fn)
        def run(ctx: Context, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(ctx, *args, **kwargs)
            except CairnError as e:
                output.warn(str(e), "error")
                sys.exit(EXIT_ERROR)

        return run  # type: ignore[return-value]

    return wrap


@click.group()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("CAIRN_DATA", "/var/lib/cairn"),
    show_default="$CAIRN_DATA or /var/lib/cairn",
    help="The data directory: catalog, pool and spool.",
)
@click.option("--db", help="Catalog URL (default: SQLite in the data directory).")
@click.option(
    "--passphrase-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="CAIRN_PASSPHRASE_FILE", help="Unlocks an encrypted pool (or set $CAIRN_PASSPHRASE).",
)  # fmt: skip
@click.option(
    "--key-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="CAIRN_KEY_FILE", help="Unlocks an encrypted pool whose keys a key file wraps.",
)  # fmt: skip
@click.pass_context
def main(
    click_ctx: click.Context, data: Path, db: str | None, passphrase_file: Path | None, key_file: Path | None
) -> None:
    """Cairn: deduplicating backups that any file client can write."""
    click_ctx.obj = Context(data, db, passphrase_file, key_file)


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


@main.group()
def source() -> None:
    """Sources: the machines and shares that are backed up."""


def _source_row(s: Any) -> dict[str, Any]:
    return {
        "name": s.name,
        "uuid": s.uuid,
        "created": s.created,
        "snapshots": s.snapshots,
        "last_snapshot": s.last_snapshot,
    }


@command(source, "add")
@click.argument("name")
def source_add(ctx: Context, name: str, as_json: bool) -> None:
    """Add a source."""
    with ctx.open() as dep:
        info = dep.add_source(name)
    output.emit_json(_source_row(info)) if as_json else output.say(f"source {name} added")


@command(source, "list")
def source_list(ctx: Context, as_json: bool) -> None:
    """List sources."""
    with ctx.open() as dep:
        rows = [_source_row(s) for s in dep.list_sources()]
    if as_json:
        output.emit_json(rows)
    else:
        output.table(rows, ["name", "snapshots", "last_snapshot", "created"])


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


def _snap_row(s: Any) -> dict[str, Any]:
    return {
        "source": s.source, "name": s.name, "uuid": s.uuid, "created": s.created,
        "files": s.files, "bytes": s.bytes, "state": s.state, "root": s.root.hex(),
    }  # fmt: skip


@command(snapshot, "create")
@click.argument("source_name", metavar="SOURCE")
@click.argument("name", required=False)
def snapshot_create(ctx: Context, source_name: str, name: str | None, as_json: bool) -> None:
    """Freeze SOURCE's working tree as a snapshot."""
    with ctx.open() as dep:
        info = dep.create_snapshot(source_name, name)
    output.emit_json(_snap_row(info)) if as_json else output.say(f"snapshot {info.name} of {source_name} created")


@command(snapshot, "list")
@click.argument("source_name", metavar="[SOURCE]", required=False)
def snapshot_list(ctx: Context, source_name: str | None, as_json: bool) -> None:
    """List snapshots, of one source or all."""
    with ctx.open() as dep:
        rows = [_snap_row(s) for s in dep.list_snapshots(source_name)]
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        r["size"] = output.human_bytes(r["bytes"])
    output.table(rows, ["source", "name", "created", "files", "size", "state"])


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
        output.emit_json({"snapshot": _snap_row(info), "entries": rows})
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


@command(snapshot, "delete")
@click.argument("source_name", metavar="SOURCE")
@click.argument("name")
def snapshot_delete(ctx: Context, source_name: str, name: str, as_json: bool) -> None:
    """Delete a snapshot (its space returns after garbage collection)."""
    with ctx.open() as dep:
        dep.delete_snapshot(source_name, name)
    output.emit_json({"deleted": name}) if as_json else output.say(f"snapshot {name} of {source_name} deleted")


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
    doc = {"snapshot": _snap_row(info), "files": stats.files, "dirs": stats.dirs, "changed": stats.changed,
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
@click.argument("args", nargs=-1, required=True, metavar="[PATH] DEST")
def restore_cmd(ctx: Context, source_name: str, snapshot_name: str, args: tuple[str, ...], as_json: bool) -> None:
    """Restore a snapshot, or PATH in it, to DEST with all metadata."""
    if len(args) > 2:
        raise click.UsageError("expected [PATH] DEST")
    path, dest = (args[0], args[1]) if len(args) == 2 else ("", args[0])
    with ctx.open() as dep, output.progress_bar(not as_json, "restore") as bar:
        view = dep.snapshot(source_name, snapshot_name)

        def show(stats: Any) -> None:
            bar(f"{stats.files} files, {output.human_bytes(stats.bytes)}")

        stats = restore(view, os.fsencode(path), dest, show)
    doc = {"files": stats.files, "dirs": stats.dirs, "bytes": stats.bytes, "errors": stats.errors}
    if as_json:
        output.emit_json(doc)
    else:
        for e in stats.errors:
            output.warn(e)
        output.say(f"restored {stats.files} files, {output.human_bytes(stats.bytes)} to {dest}")
    if stats.errors:
        sys.exit(EXIT_PARTIAL)


@command(main, "mount")
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@click.option("--debug", is_flag=True, help="Log every FUSE request.")
def mount_cmd(ctx: Context, mountpoint: Path, debug: bool, as_json: bool) -> None:
    """Mount sources and snapshots at MOUNTPOINT (runs in the foreground)."""
    from image.mountfs import MountImages
    from image.pool import ImagePool
    from vfs.mount import serve

    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with ctx.open() as dep:
        dep.start_flusher()
        images = ImagePool(dep)
        try:
            serve(dep, mountpoint, debug=debug, images=MountImages(images))
        finally:
            images.close()


@main.group()
def pool() -> None:
    """The pool: where the bytes live."""


def _pool_config(file: Any) -> dict[str, Any]:
    try:
        doc = json.load(file)
    except ValueError as e:
        raise CairnError(f"{file.name} is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise CairnError(f'{file.name} must hold a JSON object, such as {{"kind": "s3", "bucket": ...}}')
    return doc


@command(pool, "create")
@click.argument("config", type=click.File("r"))
@click.option("--encrypt", is_flag=True, help="Encrypt the pool (AES-256-GCM); needs a passphrase or key file.")
def pool_create(ctx: Context, config: Any, encrypt: bool, as_json: bool) -> None:
    """Create the deployment with its file pool on the backend CONFIG describes (a JSON file, - for stdin).

    Run it before any other command: they create a local pool in the data directory.
    """
    unlock = ctx.unlock()
    if encrypt and unlock is None:
        raise CairnError("--encrypt needs --passphrase-file, --key-file or $CAIRN_PASSPHRASE")
    with Deployment.open(ctx.data, ctx.db, pool_config=_pool_config(config), unlock=unlock, encrypt=encrypt) as dep:
        usage = dep.pool_usage()
    output.emit_json(usage) if as_json else output.say(f"pool {usage['uuid']} created on {usage['backend']}")


pool.add_command(cast(click.Command, pool_create), "add")  # the same command by both names


@command(pool, "list")
def pool_list(ctx: Context, as_json: bool) -> None:
    """Show the pool: where it is, what it holds, how well it deduplicates."""
    with ctx.open() as dep:
        usage = dep.pool_usage()
    if as_json:
        output.emit_json([usage])
        return
    row = dict(usage)
    for key in ("stored_bytes", "unique_bytes", "snapshot_bytes"):
        row[key] = output.human_bytes(usage[key])
    columns = ["kind", "backend", "state", "packs", "blobs", "stored_bytes", "snapshot_bytes", "ratio", "zstd_level"]
    output.table([row], columns + (["spool_objects"] if usage["spool_objects"] else []))


@command(pool, "configure")
@click.option("--zstd-level", type=click.IntRange(1, 22), help="Compression level for new blobs.")
@click.option(
    "--never-compress", metavar="FORMATS",
    help=f"Comma-separated formats stored without compressing, or 'none' (default: all of {','.join(FORMATS)}).",
)  # fmt: skip
@click.option("--probe/--no-probe", default=None, help="Also store chunks raw whose samples do not shrink.")
def pool_configure(
    ctx: Context, zstd_level: int | None, never_compress: str | None, probe: bool | None, as_json: bool
) -> None:
    """Change how new blobs are encoded; stored blobs keep theirs."""
    with ctx.open() as dep:
        old = dep.codec.config
        never = old.never
        if never_compress is not None:
            never = () if never_compress == "none" else tuple(n.strip() for n in never_compress.split(",") if n.strip())
        config = CodecConfig(
            level=old.level if zstd_level is None else zstd_level,
            never=never,
            probe=old.probe if probe is None else probe,
        )
        dep.configure_pool(config)
        usage = dep.pool_usage()
    if as_json:
        output.emit_json(usage)
    else:
        formats = ", ".join(config.never) or "none"
        output.say(f"new blobs use zstd level {config.level}; never compressed: {formats}; probe {config.probe}")


@command(pool, "gc")
@click.option("--repack-below", type=click.FloatRange(0, 1), default=REPACK_BELOW, show_default=True,
              help="Rewrite packs whose live share of bytes is below this.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Report what would be freed; change nothing.")
def pool_gc(ctx: Context, repack_below: float, dry_run: bool, as_json: bool) -> None:
    """Delete blobs no snapshot or working tree uses; repack sparse packs."""
    with ctx.open() as dep, output.progress_bar(not as_json, "gc") as bar:
        report = collect(
            dep, repack_below=repack_below, dry_run=dry_run,
            progress=lambda r: bar(f"{r.packs} packs, {output.human_bytes(r.bytes_freed)} freed"),
        )  # fmt: skip
    if as_json:
        output.emit_json(dataclasses.asdict(report))
    else:
        verb = "would free" if dry_run else "freed"
        output.say(
            f"{report.packs} packs examined ({output.human_bytes(report.pack_bytes)}) in {report.seconds:.1f} s: "
            f"{report.dead_blobs} dead blobs, {verb} {output.human_bytes(report.bytes_freed)}; "
            f"{report.packs_deleted} packs deleted, {report.packs_written} written"
        )


@command(pool, "check")
def pool_check(ctx: Context, as_json: bool) -> None:
    """Connectivity: reach the pool and check its identification file."""
    with ctx.open() as dep:
        start = time.monotonic()
        identity = check_identity(dep.backend, dep.pool.uuid)
        doc = {"ok": True, "pool": identity.uuid, "backend": dep.backend.describe(),
               "seconds": round(time.monotonic() - start, 4), "last_scrub": last_scrub(dep.catalog)}  # fmt: skip
    if as_json:
        output.emit_json(doc)
    else:
        output.say(f"pool {identity.uuid} at {doc['backend']} answers ({doc['seconds']} s)")


@command(pool, "scrub")
def pool_scrub(ctx: Context, as_json: bool) -> None:
    """Read every pack and verify every blob; say what any damage affects."""
    with ctx.open() as dep, output.progress_bar(not as_json, "scrub") as bar:
        start = time.monotonic()
        report = check_pool(
            dep.blobs, lambda r: bar(f"{r.packs} packs, {r.blobs} blobs, {output.human_bytes(r.bytes)}")
        )
        locate(dep.trees, dep.list_snapshots(), report.damage)
        path = pool_path(dep.backend)
        summary = record_scrub(dep.catalog, report, time.monotonic() - start, filesystem_of(path) if path else None)
    if as_json:
        output.emit_json({
            **summary, "ok": report.ok,
            "damage": [{"blob": d.blob_id.hex(), "pack": d.pack, "problem": d.problem,
                        "affects": [{"source": s, "snapshot": n, "path": p} for s, n, p in d.affects]}
                       for d in report.damage],
        })  # fmt: skip
    else:
        for d in report.damage:
            output.warn(describe(d), "damaged")
        state = "ok" if report.ok else f"{len(report.damage)} damaged"
        output.say(f"{report.packs} packs, {report.blobs} blobs, {output.human_bytes(report.bytes)}: {state}")
        if summary["filesystem_checksums"]:
            output.say(f"the pool is on {summary['filesystem']}, which checksums the disks beneath: "
                       f"run `{summary['filesystem_checksums']}` too")  # fmt: skip
    if not report.ok:
        sys.exit(EXIT_PARTIAL)


@main.group("maintenance")
def maintenance_group() -> None:
    """Maintenance mode: the deployment read-only for every process, cleanly."""


@command(maintenance_group, "on")
@click.option("--reason", default="maintenance", help="Shown to clients whose writes are refused.")
def maintenance_on(ctx: Context, reason: str, as_json: bool) -> None:
    """Refuse writes (mount, WebDAV, backups); reads, scrub and gc go on."""
    with ctx.open() as dep:
        dep.set_maintenance(reason)
        flag = dep.maintenance
    output.emit_json({"maintenance": flag}) if as_json else output.say(f"maintenance mode on: {reason}")


@command(maintenance_group, "off")
def maintenance_off(ctx: Context, as_json: bool) -> None:
    """Take writes again."""
    with ctx.open() as dep:
        dep.set_maintenance(None)
    output.emit_json({"maintenance": None}) if as_json else output.say("maintenance mode off")


@command(maintenance_group, "status")
def maintenance_status(ctx: Context, as_json: bool) -> None:
    """Whether the deployment is in maintenance mode."""
    with ctx.open() as dep:
        flag = dep.maintenance
    if as_json:
        output.emit_json({"maintenance": flag})
    else:
        output.say(f"maintenance mode on: {flag['reason']}" if flag else "maintenance mode off")


@main.group("catalog")
def catalog_group() -> None:
    """The catalog: the database of blobs, sources and snapshots."""


@command(catalog_group, "rebuild")
@click.option("--force", is_flag=True, help="Move an existing SQLite catalog aside first.")
@click.option("--pool", "pool_file", type=click.File("r"), help="The pool's backend configuration (JSON file).")
def catalog_rebuild(ctx: Context, force: bool, pool_file: Any, as_json: bool) -> None:
    """Recreate the catalog from the pool in the data directory."""
    url = ctx.db or default_db_url(ctx.data)
    db_file = ctx.data / "catalog.db"
    if ctx.db is None and db_file.exists():
        if not force:
            raise CairnError(f"{db_file} exists; pass --force to move it aside and rebuild")
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(db_file) + suffix)
            if p.exists():
                shutil.move(p, str(p) + ".old")
    config = _pool_config(pool_file) if pool_file else {"kind": "local", "path": str(ctx.data.absolute() / "pool")}
    catalog = open_catalog(url)
    try:
        backend = open_backend(config, cache_dir=ctx.data / "cache" / "file")
        report = rebuild(catalog, backend, config, unlock=ctx.unlock())
    finally:
        catalog.dispose()
    doc = {"packs": report.packs, "blobs": report.blobs, "sources": report.sources,
           "snapshots": report.snapshots, "problems": report.problems}  # fmt: skip
    if as_json:
        output.emit_json(doc)
    else:
        for problem in report.problems:
            output.warn(problem, "problem")
        output.say(
            f"catalog rebuilt: {report.sources} sources, {report.snapshots} snapshots, "
            f"{report.packs} packs, {report.blobs} blobs"
        )
    if report.problems:
        sys.exit(EXIT_PARTIAL)


# The image commands register themselves on `main`.
from . import imagecli as _imagecli  # noqa: E402, F401
