"""Restoring a snapshot path to local disk with all its metadata.

Order matters: contents first, then owners (chown clears setuid), then
modes, xattrs, and times last, directories after their children.

Damage never stops a restore: a file whose blobs cannot be read (a damaged
or missing pack) or a directory whose tree cannot be read is listed, and
everything else is restored. A file is written under a temporary name in its
directory and renamed once complete, so no partial file ever appears under a
real name. What is already at the destination is never replaced unless the
caller asks for it (`overwrite`); even then a directory is only merged into,
never removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .content import ContentReader
from .errors import BackendError, CairnError, CorruptBlob, Exists
from .meta import Kind
from .reader import SnapshotView, walk_tree
from .tree import Entry

# What reading a snapshot's blobs may raise for one file or directory: the
# restore lists the path and goes on with the rest.
READ_ERRORS = (CorruptBlob, BackendError)


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # paths (in the snapshot) not restored: their blobs are unreadable


Progress = Callable[[RestoreStats], None]


def restore(
    view: SnapshotView, path: bytes, dest: str | bytes, progress: Progress | None = None, *, overwrite: bool = False
) -> RestoreStats:
    """Restore `path` of a snapshot (a directory or a single entry) to `dest`.

    Without `overwrite`, `dest` must not exist (an empty directory may, for a directory): Exists otherwise,
    before anything is written. With it, files at the same names are replaced and directories merged into.
    """
    stats = RestoreStats()
    dest_b = os.fsencode(dest)
    entry = view.lookup(path)
    if not overwrite:
        _refuse_existing(dest_b, entry)
    links: dict[int, bytes] = {}
    rel_top = path.strip(b"/")
    if entry.kind == Kind.DIR:
        os.makedirs(dest_b, exist_ok=True)
        dirs: list[tuple[bytes, Entry]] = [(dest_b, entry)]
        for rel, child in _walk(view, entry, rel_top, stats):
            target = dest_b + b"/" + rel[len(rel_top) :].lstrip(b"/")
            _restore_one(view, rel, child, target, links, stats)
            if child.kind == Kind.DIR:
                dirs.append((target, child))
            if progress is not None and stats.files % 256 == 0:
                progress(stats)
        for target, d in reversed(dirs):
            with contextlib.suppress(FileNotFoundError):  # a directory that could not be made: listed already
                _apply_meta(target, d, stats)
    else:  # one file: damage is an error (nothing else to restore), and no partial file is left either
        try:
            _restore_entry(view, entry, dest_b, links, stats)
        except CorruptBlob as e:
            raise view.damaged(path, e) from e
    if progress is not None:
        progress(stats)
    return stats


def _refuse_existing(dest: bytes, entry: Entry) -> None:
    if not os.path.lexists(dest):
        return
    if entry.kind == Kind.DIR and os.path.isdir(dest) and not os.path.islink(dest) and not os.listdir(dest):
        return  # an empty directory made for the restore
    raise Exists(f"{os.fsdecode(dest)} exists; restore elsewhere, or give --overwrite to replace what is there")


def _walk(view: SnapshotView, top: Entry, rel: bytes, stats: RestoreStats) -> Iterator[tuple[bytes, Entry]]:
    """(path, entry) below `top`, depth first in name order; a directory whose tree is unreadable is listed."""
    return walk_tree(top, rel, lambda entry, path: _children(view, entry, path, stats))


def _children(view: SnapshotView, entry: Entry, rel: bytes, stats: RestoreStats) -> Iterator[Entry]:
    try:
        listing = view.listing(entry)
    except READ_ERRORS as e:
        _damaged(view, rel + b"/", e, stats)
        return iter(())
    return iter(sorted(listing.values(), key=lambda e: e.name))


def _damaged(view: SnapshotView, rel: bytes, e: CairnError, stats: RestoreStats) -> None:
    where = rel.decode("utf-8", "backslashreplace") or "/"
    stats.damaged.append(where)
    stats.errors.append(f"{view.label}: {where}: not restored: {e}")


def _restore_one(
    view: SnapshotView, rel: bytes, e: Entry, target: bytes, links: dict[int, bytes], stats: RestoreStats
) -> None:
    try:
        _restore_entry(view, e, target, links, stats)
    except READ_ERRORS as err:
        _damaged(view, rel, err, stats)
    except OSError as err:
        stats.errors.append(f"{os.fsdecode(target)}: {err.strerror}")
    except CairnError as err:
        stats.errors.append(str(err))


def _restore_entry(view: SnapshotView, e: Entry, target: bytes, links: dict[int, bytes], stats: RestoreStats) -> None:
    if e.kind == Kind.DIR:
        if not os.path.isdir(target):
            _clear(target)
            os.mkdir(target, 0o700)  # its mode once its children are in
        stats.dirs += 1
        return  # metadata after the children
    if e.nlink > 1 and e.ino in links:
        _clear(target)
        os.link(links[e.ino], target)
        stats.files += 1
        return
    if e.kind == Kind.FILE:
        _write_file(view.reader(e), target, e, stats)
        stats.bytes += e.size
    else:
        _clear(target)
        if e.kind == Kind.SYMLINK:
            os.symlink(e.payload, target)
        elif e.kind in (Kind.CHR, Kind.BLK, Kind.FIFO, Kind.SOCKET):
            os.mknod(target, e.st_mode, e.rdev)
        else:
            raise CairnError(f"unknown kind {e.kind} at {os.fsdecode(target)}")
        _apply_meta(target, e, stats)
    stats.files += 1
    if e.nlink > 1:
        links[e.ino] = target


def _clear(target: bytes) -> None:
    """Make room for a non-directory at `target` (the restore was told to overwrite, or nothing is there)."""
    try:
        os.unlink(target)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise CairnError(f"{os.fsdecode(target)} is a directory in the way") from None


def _write_file(reader: ContentReader, target: bytes, e: Entry, stats: RestoreStats) -> None:
    """Write the file complete with its metadata under a temporary name beside `target`, then rename it."""
    if os.path.isdir(target) and not os.path.islink(target):
        raise CairnError(f"{os.fsdecode(target)} is a directory in the way")
    tmp = os.path.join(os.path.dirname(target) or b".", b".cairn-restore-" + secrets.token_hex(8).encode())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
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
        _apply_meta(tmp, e, stats, shown=target)
        os.rename(tmp, target)  # replaces a file at `target` in one step
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _apply_meta(target: bytes, e: Entry, stats: RestoreStats, shown: bytes | None = None) -> None:
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
            where = os.fsdecode(shown or target)
            stats.errors.append(f"{where}: xattr {name!r} not restored: {err.strerror}")
    os.utime(target, ns=(e.atime_ns, e.mtime_ns), follow_symlinks=False)
