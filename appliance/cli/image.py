"""`cairn image`: disk images into the image pool, and back out as blocks (NBD) or files (ext2/3/4)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from engine.errors import InvalidArgument, IsADirectory
from engine.imagesetup import create_image_pool
from image.disk import VersionReader
from image.files import extract, listing, open_fs, write_file
from image.nbd import Export, NbdServer
from image.pool import BLOCK_SIZE, BLOCK_SIZES, ImageInfo, ImagePool
from image.push import push

from . import output
from .base import Context, command, main
from .pool import _pool_config


@main.group("image")
def image() -> None:
    """Disk images: whole disks and VM images, block by block."""


@image.group("pool")
def image_pool() -> None:
    """The image pool: a backend of its own for disk images' blocks (default: they share the file pool)."""


@command(image_pool, "create")
@click.argument("config", type=click.File("r"))
def image_pool_create(ctx: Context, config: Any, as_json: bool) -> None:
    """Put disk images' blocks on the backend CONFIG describes (JSON, as for `pool create`; - for stdin).

    Files, trees and snapshots stay in the file pool. Only before the first
    image is written: blocks already in the file pool are not moved. Stop
    `cairn serve` first; it uses the image pool once started again.
    """
    doc = _pool_config(config)
    with ctx.open() as dep:
        create_image_pool(dep, doc)
    with ctx.open() as dep:  # opened anew: the deployment opens the image pool it now has
        usage = dep.pool_usage()["image_pool"]
    assert usage is not None
    output.emit_json(usage) if as_json else output.say(f"image pool {usage['uuid']} created on {usage['backend']}")


def _info_row(i: ImageInfo) -> dict[str, Any]:
    return {"source": i.source, "name": i.name, "snapshot": i.snapshot, "file": i.file_name, "size": i.size,
            "block_size": i.block_size, "root": i.root.hex()}  # fmt: skip


def _version(pool: ImagePool, source: str, disk: str) -> tuple[str, VersionReader]:
    """DISK@SNAPSHOT, or DISK for the writable image as last committed."""
    name, _, snapshot = disk.partition("@")
    info = pool.version(source, name, snapshot) if snapshot else pool.find(source, name)
    return info.file_name.removesuffix(".img"), pool.reader(info)


@command(image, "list")
@click.argument("source_name", metavar="[SOURCE]", required=False)
def image_list(ctx: Context, source_name: str | None, as_json: bool) -> None:
    """List the images and the versions snapshots hold."""
    with ctx.open() as dep:
        pool = ImagePool(dep)
        names = [source_name] if source_name else [s.name for s in dep.list_sources()]
        rows = [_info_row(i) for s in names for i in pool.images(s) + pool.versions(s)]
    if as_json:
        output.emit_json(rows)
        return
    for r in rows:
        r["size"] = output.human_bytes(r["size"])
    output.table(rows, ["source", "file", "size", "block_size"])


@command(image, "push")
@click.argument("source_name", metavar="SOURCE")
@click.argument("disk")
@click.argument("path", metavar="FILE_OR_DEVICE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--snapshot", "snapshot", help="Name of the snapshot taken after (default: the time, UTC).")
@click.option("--no-snapshot", is_flag=True, help="Update the writable image only.")
@click.option("--block-size", type=click.Choice([str(b >> 10) for b in BLOCK_SIZES]), default=str(BLOCK_SIZE >> 10),
              show_default=True, help="KiB per block of a new image (an existing one keeps its own).")  # fmt: skip
def image_push(
    ctx: Context, source_name: str, disk: str, path: Path, snapshot: str | None, no_snapshot: bool,
    block_size: str, as_json: bool,
) -> None:  # fmt: skip
    """Store FILE_OR_DEVICE as image DISK of SOURCE, sending only the blocks that changed."""
    with ctx.open() as dep, output.progress_bar(not as_json, "push") as bar:
        if source_name not in {s.name for s in dep.list_sources()}:
            dep.add_source(source_name)
        pool = ImagePool(dep, int(block_size) << 10)
        try:
            stats = push(pool, source_name, disk, path, lambda s: bar(f"{output.human_bytes(s.read_bytes)} read"))
            info = None if no_snapshot else dep.create_snapshot(source_name, snapshot)
        finally:
            pool.close()
    doc = {"snapshot": info.name if info else None, **stats.__dict__}
    if as_json:
        output.emit_json(doc)
        return
    output.say(
        f"image {disk} of {source_name}: {output.human_bytes(stats.size)}, {stats.changed_blocks} of "
        f"{stats.blocks} blocks changed, {output.human_bytes(stats.stored_bytes)} stored"
        + (f"; snapshot {info.name}" if info else "")
    )


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidArgument(f"--nbd takes HOST:PORT, not {text!r}")
    return host or "127.0.0.1", int(port)


@command(image, "export")
@click.argument("source_name", metavar="SOURCE")
@click.argument("disk", metavar="DISK[@SNAPSHOT]")
@click.option("--nbd", "address", required=True, help="Serve over NBD at HOST:PORT (port 0: any free port).")
def image_export(ctx: Context, source_name: str, disk: str, address: str, as_json: bool) -> None:
    """Serve an image version read-only over NBD until SIGTERM or SIGINT."""
    with ctx.open() as dep:
        name, reader = _version(ImagePool(dep), source_name, disk)
        server = NbdServer(_address(address), Export(name, reader))
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        server.start()
        url = f"nbd://{_address(address)[0]}:{server.port}/{name}"
        output.emit_json({"url": url, "size": reader.size}) if as_json else output.say(f"serving {url}")
        sys.stdout.flush()
        stop.wait()
        server.shutdown()
        server.server_close()


@command(image, "ls")
@click.argument("source_name", metavar="SOURCE")
@click.argument("disk", metavar="DISK[@SNAPSHOT]")
@click.argument("path", default="/")
def image_ls(ctx: Context, source_name: str, disk: str, path: str, as_json: bool) -> None:
    """List PATH in the ext2/3/4 file system of an image version."""
    with ctx.open() as dep:
        rows = listing(open_fs(_version(ImagePool(dep), source_name, disk)[1]), path)
    if as_json:
        output.emit_json(rows)
    else:
        output.table(rows, ["mode", "uid", "gid", "size", "mtime", "name"])


@command(image, "get")
@click.argument("source_name", metavar="SOURCE")
@click.argument("disk", metavar="DISK[@SNAPSHOT]")
@click.argument("path")
@click.argument("dest", type=click.Path(path_type=Path))
def image_get(ctx: Context, source_name: str, disk: str, path: str, dest: Path, as_json: bool) -> None:
    """Extract PATH (a file or a directory tree) from an image version's file system to DEST ('-': stdout)."""
    with ctx.open() as dep:
        fs = open_fs(_version(ImagePool(dep), source_name, disk)[1])
        if str(dest) == "-":
            inode = fs.lookup(path)
            if inode.is_dir:
                raise IsADirectory(f"{path} is a directory; only a file goes to stdout")
            write_file(fs, inode, sys.stdout.buffer)
            return
        stats = extract(fs, path, dest)
    doc = {"files": stats.files, "dirs": stats.dirs, "bytes": stats.bytes, "skipped": stats.skipped}
    if as_json:
        output.emit_json(doc)
    else:
        output.say(f"extracted {stats.files} files, {output.human_bytes(stats.bytes)} to {dest}")
