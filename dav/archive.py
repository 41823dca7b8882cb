"""Archives of a directory for restores: GET `...?format=zip` or `?format=tar.zst`, streamed.

Nothing is built ahead: entries are read a chunk at a time and handed to the
client as they are encoded, so memory stays flat for any size of tree. The
tar is written here directly (POSIX pax headers from `tarfile`, then the
bytes, then padding): tarfile's own writer wants a whole file per call.

An entry that cannot be read (a damaged or missing blob, a pool that does
not answer) ends the archive there, unfinished: a tar.zst without the end
of its zstd frame, a zip without its central directory. The response has
long been sent as a success by then, so that is how a client learns the
archive is incomplete; it is never a well-formed archive with a file cut
short. A client that can take a list instead (`cairn --remote … restore`
asks with `damaged=list`) gets every other entry: a file that cannot be
read is padded with zeros to its size and named in a pax global record
right after it (DAMAGED: every path so far, a JSON list) for the client to
drop it; a folder that cannot be listed is named (with a trailing `/`) and
passed over.

A tar entry carries mode (with setuid, setgid and sticky), owner, times,
link target, device numbers and extended attributes (POSIX ACLs among
them) as `SCHILY.xattr.NAME` pax records, as GNU tar and bsdtar write them.
"""

from __future__ import annotations

import itertools
import json
import logging
import stat as st
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, cast
from urllib.parse import quote

import zstandard

from engine.errors import CairnError, CorruptBlob
from engine.meta import Kind, Stat
from engine.mount import MountView

from .session import Session

log = logging.getLogger(__name__)

PIECE = 1 << 20  # bytes read and encoded per step
ZSTD_LEVEL = 3  # ~300 MB/s on one core here; higher levels cost more than they save for a restore
FORMATS = {"zip": "application/zip", "tar.zst": "application/zstd"}
XATTR = "SCHILY.xattr."  # pax record of an extended attribute
DAMAGED = "CAIRN.damaged"  # pax global record: what could not be read so far, a JSON list (`damaged=list`)


def attachment(filename: str) -> str:
    """A Content-Disposition saving the body as `filename` (RFC 6266's UTF-8 form: any name survives)."""
    return f"attachment; filename*=UTF-8''{quote(filename, safe='')}"


@dataclass(frozen=True)
class Item:
    path: str  # inside the archive, `/`-separated, under the top directory's name
    stat: Stat


def walk(session: Session, number: int, prefix: str, damaged: list[str] | None = None) -> Iterator[Item]:
    """Every entry below a directory, depth first, in name order. `damaged`: a folder that cannot be
    listed is added to it (with a trailing `/`) and passed over, instead of ending the walk."""
    try:
        for page in session.pages(number):
            for name, stat in page:
                path = f"{prefix}/{name.decode('utf-8', 'surrogateescape')}"
                yield Item(path, stat)
                if stat.kind == Kind.DIR:
                    yield from walk(session, stat.ino, path, damaged)
    except CorruptBlob as e:
        if damaged is None:
            raise
        log.warning("archive: %s/ not listed: %s", prefix, e)
        damaged.append(prefix + "/")


def pieces(view: MountView, item: Item) -> Iterator[bytes]:
    """A file's bytes, exactly its recorded size (zeros if it shrank meanwhile)."""
    pos = 0
    while pos < item.stat.size:
        data = view.read(item.stat.ino, pos, min(PIECE, item.stat.size - pos))
        if not data:
            data = bytes(min(PIECE, item.stat.size - pos))
        pos += len(data)
        yield data


class Sink:
    """A write-only file that hands out what was written since last asked."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _unfinished_on_error(parts: Iterator[bytes], name: str) -> Iterator[bytes]:
    """The archive's bytes; after an entry that cannot be read, nothing more (what is encoded but not sent stays)."""
    try:
        yield from parts
    except CairnError as e:
        log.warning("archive %s ends unfinished: %s", name, e)


def tar_zst(session: Session, top: Stat, name: str, list_damaged: bool = False) -> Iterator[bytes]:
    return _unfinished_on_error(_tar_zst(session, top, name, [] if list_damaged else None), name)


def zip_archive(session: Session, top: Stat, name: str) -> Iterator[bytes]:
    return _unfinished_on_error(_zip_archive(session, top, name), name)


def _tar_zst(session: Session, top: Stat, name: str, damaged: list[str] | None) -> Iterator[bytes]:
    """A folder and everything below it, or one entry. `damaged`: None ends the archive at an unreadable
    file or folder; a list takes its path, and the archive goes on."""
    sink = Sink()
    out = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(cast(IO[bytes], sink), closefd=False)
    below = walk(session, top.ino, name, damaged) if top.kind == Kind.DIR else iter(())
    told = 0
    for item in itertools.chain([Item(name, top)], below):
        if damaged is not None and len(damaged) > told:  # a folder that could not be listed
            out.write(tarfile.TarInfo.create_pax_global_header({DAMAGED: json.dumps(damaged)}))
            told = len(damaged)
        out.write(_tar_header(session.view, item))
        if item.stat.kind == Kind.FILE:
            sent = 0
            try:
                for data in pieces(session.view, item):
                    out.write(data)
                    sent += len(data)
                    yield sink.take()
            except CorruptBlob as e:
                if damaged is None:
                    raise
                log.warning("archive %s: %s not sent: %s", name, item.path, e)
                damaged.append(item.path)
                out.write(bytes(item.stat.size - sent + -item.stat.size % tarfile.BLOCKSIZE))  # it keeps its size
                # Named right after it, so the client drops it before it takes its name.
                out.write(tarfile.TarInfo.create_pax_global_header({DAMAGED: json.dumps(damaged)}))
                told = len(damaged)
                continue
            out.write(bytes(-item.stat.size % tarfile.BLOCKSIZE))
        yield sink.take()
    if damaged is not None and len(damaged) > told:
        out.write(tarfile.TarInfo.create_pax_global_header({DAMAGED: json.dumps(damaged)}))
    out.write(bytes(2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
    out.close()  # type: ignore[no-untyped-call]
    yield sink.take()


def _tar_header(view: MountView, item: Item) -> bytes:
    s = item.stat
    info = tarfile.TarInfo(item.path)
    info.mode, info.uid, info.gid, info.mtime = s.mode & 0o7777, s.uid, s.gid, s.mtime_ns / 1e9
    kind = s.kind
    if kind == Kind.FILE:
        info.type, info.size = tarfile.REGTYPE, s.size
    elif kind == Kind.DIR:
        info.type = tarfile.DIRTYPE
    elif kind == Kind.SYMLINK:
        info.type, info.linkname = tarfile.SYMTYPE, view.readlink(s.ino).decode("utf-8", "surrogateescape")
    elif kind == Kind.FIFO:
        info.type = tarfile.FIFOTYPE
    elif kind in (Kind.CHR, Kind.BLK):
        info.type = tarfile.CHRTYPE if kind == Kind.CHR else tarfile.BLKTYPE
        info.devmajor, info.devminor = s.rdev >> 8, s.rdev & 0xFF
    else:
        return b""  # sockets have no place in a tar
    # Bytes as surrogates: tarfile writes them back as the same bytes (a BINARY pax header). The time
    # exactly, to the nanosecond (tarfile's own is a float).
    seconds, ns = divmod(s.mtime_ns, 1_000_000_000)
    info.pax_headers = {"mtime": f"{seconds}.{ns:09d}"}
    info.pax_headers |= {XATTR + k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
                        for k, v in view.xattrs(s.ino).items()}  # fmt: skip
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _zip_archive(session: Session, top: Stat, name: str) -> Iterator[bytes]:
    sink = Sink()
    # Stored, not deflated: restores want speed, and most backed-up bulk is compressed already.
    with zipfile.ZipFile(cast(IO[bytes], sink), "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(_zip_info(f"{name}/", top), b"")
        for item in walk(session, top.ino, name):
            kind = item.stat.kind
            if kind == Kind.DIR:
                zf.writestr(_zip_info(item.path + "/", item.stat), b"")
            elif kind == Kind.SYMLINK:
                zf.writestr(_zip_info(item.path, item.stat), session.view.readlink(item.stat.ino))
            elif kind == Kind.FILE:
                with zf.open(_zip_info(item.path, item.stat), "w", force_zip64=True) as f:
                    for data in pieces(session.view, item):
                        f.write(data)
                        yield sink.take()
            yield sink.take()
    yield sink.take()


def _zip_info(path: str, s: Stat) -> zipfile.ZipInfo:
    stamp = time.gmtime(max(s.mtime_ns // 1_000_000_000, 315532800))  # zip dates start in 1980
    info = zipfile.ZipInfo(path, stamp[:6])
    info.external_attr = (st.S_IFMT(s.mode) | (s.mode & 0o7777)) << 16
    if s.kind == Kind.DIR:
        info.external_attr |= 0x10  # the MS-DOS directory flag
    info.create_system = 3  # Unix: unzip restores modes and symlinks
    return info
