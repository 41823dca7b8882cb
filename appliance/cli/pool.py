"""`cairn pool …`, `cairn maintenance …`, `cairn catalog …` (registered by cli.py)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, cast

import click

from engine.catalog import open_catalog
from engine.check import describe, last_scrub, locate, missing_doc, missing_packs
from engine.codec import FORMATS, CodecConfig
from engine.deployment import Deployment, default_db_url
from engine.errors import CairnError
from engine.gc import REPACK_BELOW
from engine.pool import check_identity
from engine.rebuild import rebuild, rebuild_image_pool
from engine.storage import open_backend

from ..words import job_summary
from . import output
from .base import EXIT_PARTIAL, Context, command, main
from .target import target


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
    with target(ctx) as t:
        usage = t.pool_usage()
    show_pools(pool_entries(usage), as_json)


def pool_entries(usage: dict[str, Any]) -> list[dict[str, Any]]:
    """The file pool's usage, then the image pool's where the deployment has one of its own."""
    image = usage.pop("image_pool", None)
    return [usage] + ([image] if image else [])


def show_pools(entries: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        output.emit_json(entries)
        return
    rows = []
    for usage in entries:
        row = {"snapshot_bytes": None, "ratio": None, **usage}  # the image pool's: none of its own
        for key in ("stored_bytes", "unique_bytes", "snapshot_bytes"):
            row[key] = None if row[key] is None else output.human_bytes(row[key])
        rows.append(row)
    columns = ["kind", "backend", "state", "packs", "blobs", "stored_bytes", "snapshot_bytes", "ratio", "zstd_level"]
    output.table(rows, columns + (["spool_objects"] if any(u["spool_objects"] for u in entries) else []))


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
    with target(ctx) as t:
        report = t.gc(repack_below, dry_run, not as_json)
    if as_json:
        output.emit_json(report)
    else:
        output.say(job_summary("gc", {}, "done", report, None))  # the words of the web UI's jobs page


@command(pool, "check")
def pool_check(ctx: Context, as_json: bool) -> None:
    """Connectivity: reach the pool, check its identification file, and compare its packs with the catalog's."""
    with ctx.open() as dep:
        start = time.monotonic()
        identity = check_identity(dep.backend, dep.pool.uuid)
        doc = {"ok": True, "pool": identity.uuid, "backend": dep.backend.describe(),
               "seconds": round(time.monotonic() - start, 4), "last_scrub": last_scrub(dep.catalog)}  # fmt: skip
        if dep.image_pool is not None:
            image = check_identity(dep.image_pool.backend, dep.image_pool.uuid)
            doc["image_pool"] = {"pool": image.uuid, "backend": dep.image_pool.backend.describe()}
        missing = [d for store in dep.stores for d in missing_packs(store)]
        locate(dep.trees, dep.list_snapshots(), missing)
        gone = missing_doc(missing)
        doc.update(ok=not missing, missing_packs=gone)
    if as_json:
        output.emit_json(doc)
    else:
        output.say(f"pool {identity.uuid} at {doc['backend']} answers ({doc['seconds']} s)")
        if dep.image_pool is not None:
            output.say(f"image pool {dep.image_pool.uuid} at {dep.image_pool.backend.describe()} answers")
        for m in gone:
            where = "; ".join(f"{a['source']} @ {a['snapshot']}: {a['path']}" for a in m["affects"]) or "no snapshot"
            output.warn(f"pack {m['pack']} is missing ({m['blobs']} blobs; affects {where})", "missing")
    if missing:
        sys.exit(EXIT_PARTIAL)


@command(pool, "scrub")
def pool_scrub(ctx: Context, as_json: bool) -> None:
    """Read every pack and verify every blob; say what any damage affects."""
    with target(ctx) as t:
        doc = t.scrub(not as_json)
    doc["ok"] = not doc["damage"]
    if as_json:
        output.emit_json(doc)
    else:
        for d in doc["damage"]:
            output.warn(describe(d), "damaged")
        output.say(job_summary("scrub", {}, "done", doc, None))
        if doc["filesystem_checksums"]:
            output.say(f"the pool is on {doc['filesystem']}, which checksums the disks beneath: "
                       f"run `{doc['filesystem_checksums']}` too")  # fmt: skip
    if not doc["ok"]:
        sys.exit(EXIT_PARTIAL)


@main.group("maintenance")
def maintenance_group() -> None:
    """Maintenance mode: the deployment read-only for every process, cleanly."""


@command(maintenance_group, "on")
@click.option("--reason", default="maintenance", help="Shown to clients whose writes are refused.")
def maintenance_on(ctx: Context, reason: str, as_json: bool) -> None:
    """Refuse writes (mount, WebDAV, backups); reads, scrub and gc go on."""
    _maintenance(ctx, True, reason, as_json)


@command(maintenance_group, "off")
def maintenance_off(ctx: Context, as_json: bool) -> None:
    """Take writes again."""
    _maintenance(ctx, False, None, as_json)


@command(maintenance_group, "status")
def maintenance_status(ctx: Context, as_json: bool) -> None:
    """Whether the deployment is in maintenance mode."""
    _maintenance(ctx, None, None, as_json)


def _maintenance(ctx: Context, on: bool | None, reason: str | None, as_json: bool) -> None:
    with target(ctx) as t:
        doc = t.maintenance(on, reason)
    flag = doc["maintenance"]
    if as_json:
        output.emit_json(doc)
    else:
        output.say(f"maintenance mode on: {flag['reason']}" if flag else "maintenance mode off")


@main.group("catalog")
def catalog_group() -> None:
    """The catalog: the database of blobs, sources and snapshots."""


@command(catalog_group, "rebuild")
@click.option("--force", is_flag=True, help="Move an existing SQLite catalog aside first.")
@click.option("--pool", "pool_file", type=click.File("r"), help="The pool's backend configuration (JSON file).")
@click.option("--image-pool", "image_file", type=click.File("r"),
              help="The image pool's backend configuration (JSON file), if it has its own.")  # fmt: skip
def catalog_rebuild(ctx: Context, force: bool, pool_file: Any, image_file: Any, as_json: bool) -> None:
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
        note = report.image_pool
        if image_file is not None:
            image_config = _pool_config(image_file)
            image_backend = open_backend(image_config, cache_dir=ctx.data / "cache" / "image")
            expected = note["uuid"] if note else None
            images = rebuild_image_pool(catalog, image_backend, image_config, unlock=ctx.unlock(), expected=expected)
            report.packs, report.blobs = report.packs + images.packs, report.blobs + images.blobs
            report.problems += images.problems
        elif note is not None:
            report.problems.append(
                f"disk images keep their blocks in image pool {note['uuid']} at {note['backend']}: "
                "rebuild again with --image-pool CONFIG to read them"
            )
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
