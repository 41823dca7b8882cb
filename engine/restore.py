"""Restoring a snapshot path to local disk with all its metadata.

Order matters: contents first, then owners (chown clears setuid), then
modes, xattrs, and times last, directories after their children.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from .content import ContentReader
from .errors import CairnError, CorruptBlob
from .meta import Kind
from .reader import SnapshotView
from .tree import Entry


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


Progress = Callable[[RestoreStats], None]


def restore(view: SnapshotView, path: bytes, dest: str | bytes, progress: Progress | None = None) -> RestoreStats:
    """Restore `path` of a snapshot (a directory or a single entry) to `dest`."""
    stats = RestoreStats()
    dest_b = os.fsencode(dest)
    entry = view.lookup(path)
    links: dict[int, bytes] = {}
    if entry.kind == Kind.DIR:
        os.makedirs(dest_b, exist_ok=True)
        dirs: list[tuple[bytes, Entry]] = [(dest_b, entry)]
        for rel, child in view.walk(path):
            target = dest_b + b"/" + rel[len(path.strip(b"/")) :].lstrip(b"/")
            try:
                _restore_entry(view, child, target, links, stats)
            except OSError as e:
                stats.errors.append(f"{os.fsdecode(target)}: {e.strerror}")
            except CorruptBlob as e:
                stats.errors.append(str(view.damaged(rel, e)))
            if child.kind == Kind.DIR:
                dirs.append((target, child))
            if progress is not None and stats.files % 256 == 0:
                progress(stats)
        for target, d in reversed(dirs):
            _apply_meta(target, d, stats)
    else:
        try:
            _restore_entry(view, entry, dest_b, links, stats)
        except CorruptBlob as e:
            raise view.damaged(path, e) from e
    if progress is not None:
        progress(stats)
    return stats


def _restore_entry(view: SnapshotView, e: Entry, target: bytes, links: dict[int, bytes], stats: RestoreStats) -> None:
    if e.kind == Kind.DIR:
        os.makedirs(target, exist_ok=True)
        stats.dirs += 1
        return  # metadata after the children
    _clear(target)
    stats.files += 1
    if e.nlink > 1 and e.ino in links:
        os.link(links[e.ino], target)
        return
    if e.kind == Kind.FILE:
        _write_file(view.reader(e), target)
        stats.bytes += e.size
    elif e.kind == Kind.SYMLINK:
        os.symlink(e.payload, target)
    elif e.kind in (Kind.CHR, Kind.BLK, Kind.FIFO, Kind.SOCKET):
        os.mknod(target, e.st_mode, e.rdev)
    else:
        raise CairnError(f"unknown kind {e.kind} at {os.fsdecode(target)}")
    if e.nlink > 1:
        links[e.ino] = target
    _apply_meta(target, e, stats)


def _clear(target: bytes) -> None:
    try:
        os.unlink(target)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise CairnError(f"{os.fsdecode(target)} is a directory in the way") from None


def _write_file(reader: ContentReader, target: bytes) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        for start, run in reader.data_ranges():
            pos = start
            for blob_id, _length in run:
                data = memoryview(reader.chunks.get(blob_id))
                while data:
                    written = os.pwrite(fd, data, pos)
                    data, pos = data[written:], pos + written
        os.ftruncate(fd, reader.size)  # trailing holes
    finally:
        os.close(fd)


def _apply_meta(target: bytes, e: Entry, stats: RestoreStats) -> None:
    is_link = e.kind == Kind.SYMLINK
    with contextlib.suppress(PermissionError):  # not root: the restoring user owns them
        os.chown(target, e.uid, e.gid, follow_symlinks=False)
    if not is_link:
        os.chmod(target, e.mode)
    for name, value in e.xattrs:
        try:
            os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EPERM):
                raise
            stats.errors.append(f"{os.fsdecode(target)}: xattr {name!r} not restored: {err.strerror}")
    os.utime(target, ns=(e.atime_ns, e.mtime_ns), follow_symlinks=False)
