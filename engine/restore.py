"""Restoring a snapshot path to local disk with all its metadata.

A restore plans before it reads: the trees below the path are read level by
level (one planned read per level), which gives every entry and the totals
for progress; then the files are restored a window at a time, their blobs
read in pack order (fetch.py) and written as they arrive, on the fetch
workers. A file is written under a temporary name in its directory, given
its owner, mode, xattrs and times through its descriptor (owner before mode:
chown clears setuid), and renamed once complete, so no partial file ever
appears under a real name. Directories get their metadata last, children
before parents.

Damage never stops a restore: a file whose blobs cannot be read (a damaged
or missing pack) or a directory whose tree cannot be read is listed, and
everything else is restored. What is already at the destination is never
replaced unless the caller asks for it (`overwrite`); even then a directory
is only merged into, never removed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from .content import Extents, unpack_extents
from .errors import BackendError, CairnError, CorruptBlob, Exists, quoted
from .ids import HOLE
from .meta import Kind
from .reader import SnapshotView, walk_tree
from .tree import Entry, deserialize

# What reading a snapshot's blobs may raise for one file or directory: the
# restore lists the path and goes on with the rest.
READ_ERRORS = (CorruptBlob, BackendError)
# Files planned and read together: their blobs are read in pack order, and
# each file stays open from its first blob to its last.
WINDOW_FILES = 4096
WINDOW_BYTES = 256 << 20
PROGRESS_EVERY = 0.25  # seconds


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    total_files: int = 0  # known once the trees are read
    total_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # paths (in the snapshot) not restored: their blobs are unreadable


Progress = Callable[[RestoreStats], None]
Listings = dict[bytes, dict[bytes, Entry]]


def restore(
    view: SnapshotView, path: bytes, dest: str | bytes, progress: Progress | None = None, *, overwrite: bool = False
) -> RestoreStats:
    """Restore `path` of a snapshot (a directory or a single entry) to `dest`.

    Without `overwrite`, `dest` must not exist (an empty directory may, for a directory): Exists otherwise,
    before anything is written. With it, files at the same names are replaced and directories merged into.
    """
    dest_b = os.fsencode(dest)
    entry = view.lookup(path)
    if not overwrite:
        _refuse_existing(dest_b, entry)
    job = _Restore(view, overwrite, progress)
    try:
        if entry.kind == Kind.DIR:
            job.tree(entry, path.strip(b"/"), dest_b)
        else:  # one file: damage is an error (nothing else to restore), and no partial file is left either
            job.stats.total_files, job.stats.total_bytes = 1, entry.size if entry.kind == Kind.FILE else 0
            job.entry(path.strip(b"/"), entry, dest_b)
            job.flush()
            damage = job.first_damage
            if damage is not None:  # damage names the path; a pool that did not answer speaks for itself
                raise view.damaged(path, damage) if isinstance(damage, CorruptBlob) else damage
    finally:
        job.close()
    job.report(force=True)
    return job.stats


def _refuse_existing(dest: bytes, entry: Entry) -> None:
    if not os.path.lexists(dest):
        return
    if entry.kind == Kind.DIR and os.path.isdir(dest) and not os.path.islink(dest) and not os.listdir(dest):
        return  # an empty directory made for the restore
    raise Exists(f"{os.fsdecode(dest)} exists; restore elsewhere, or give --overwrite to replace what is there")


class _File:
    """A regular file being written under a temporary name; `lock` orders its blobs' writes."""

    __slots__ = ("dead", "ends_in_hole", "entry", "fd", "holes", "left", "lock", "rel", "target", "tmp")

    def __init__(self, rel: bytes, entry: Entry, target: bytes, tmp: bytes, extents: Extents):
        self.rel, self.entry, self.target, self.tmp = rel, entry, target, tmp
        self.left = sum(1 for blob_id, _ in extents if blob_id != HOLE)  # extents with data still to write
        self.holes = entry.size - sum(n for blob_id, n in extents if blob_id != HOLE)
        self.ends_in_hole = not extents or extents[-1][0] == HOLE
        self.fd: int | None = None
        self.dead = False
        self.lock = threading.Lock()

    def open(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        return self.fd

    def abandon(self) -> None:
        self.dead = True
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


@dataclass
class _Window:
    """Files planned together: each blob's (file, offset, length), and the hard links to make after them."""

    blobs: dict[bytes, list[tuple[_File, int, int]]] = field(default_factory=dict)
    links: list[tuple[bytes, bytes]] = field(default_factory=list)  # (first target, link)
    files: int = 0
    bytes: int = 0


class _Restore:
    """One restore: the walk on the calling thread, file contents on the fetch workers."""

    def __init__(self, view: SnapshotView, overwrite: bool, progress: Progress | None):
        self.view = view
        self.overwrite = overwrite
        self.progress = progress
        self.stats = RestoreStats()
        self.first_damage: CairnError | None = None
        self._lock = threading.Lock()  # stats, and the window's blob → targets map while blobs arrive
        self._shown = 0.0
        self._links: dict[int, bytes] = {}  # inode → first target, for hard links
        self._window = _Window()  # being planned by the walk
        self._reading: Future[None] | None = None  # the window before it, being read meanwhile
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="cairn-restore")
        token = secrets.token_hex(6).encode()
        self._tmp_names = (b".cairn-restore-%s-%d" % (token, n) for n in itertools.count())

    def close(self) -> None:
        self._runner.shutdown(wait=True, cancel_futures=True)

    # -- the walk -----------------------------------------------------------

    def tree(self, top: Entry, rel_top: bytes, dest: bytes) -> None:
        listings = self._read_trees(top)
        os.makedirs(dest, exist_ok=True)
        dirs: list[tuple[bytes, Entry]] = [(dest, top)]
        for rel, child in walk_tree(top, rel_top, lambda e, p: self._children(listings, e, p)):
            target = dest + b"/" + rel[len(rel_top) :].lstrip(b"/")
            if self.entry(rel, child, target) and child.kind == Kind.DIR:
                dirs.append((target, child))
        self.flush()
        for target, d in reversed(dirs):
            try:
                _apply_meta(target, d, self._error)
            except OSError as e:
                self._failed_at(target, e)

    def _read_trees(self, top: Entry) -> Listings:
        """Every tree below `top`, one planned read per level; the totals for progress."""
        listings: Listings = {}
        linked: set[int] = set()  # a hard link's bytes are counted once
        level = [top.payload]
        while level:
            self.view.trees.blobs.read_many(level, functools.partial(_parse_into, listings), lambda _id, _e: None)
            below: list[bytes] = []
            for tree_id in level:
                listing = listings.get(tree_id)
                if listing is None:
                    continue  # unreadable: listed as damaged on the walk
                for e in listing.values():
                    if e.kind == Kind.DIR:
                        below.append(e.payload)
                        continue
                    self.stats.total_files += 1
                    if e.kind == Kind.FILE and (e.nlink == 1 or e.ino not in linked):
                        self.stats.total_bytes += e.size
                        linked.add(e.ino)
            level = [t for t in dict.fromkeys(below) if t not in listings]
        return listings

    def _children(self, listings: Listings, entry: Entry, rel: bytes) -> Iterator[Entry]:
        listing = listings.get(entry.payload)
        if listing is None:
            try:  # read alone, for its error (or it was repacked meanwhile and reads now)
                listing = self.view.listing(entry)
            except READ_ERRORS as e:
                self._damaged(rel + b"/", e)
                return iter(())
        return iter(sorted(listing.values(), key=lambda e: e.name))

    def entry(self, rel: bytes, e: Entry, target: bytes) -> bool:
        """Restore one entry (a file joins the window); False if it failed."""
        try:
            self._entry(rel, e, target)
            return True
        except (OSError, CairnError) as err:
            self._failed_at(target, err)
        return False

    def _entry(self, rel: bytes, e: Entry, target: bytes) -> None:
        if e.kind == Kind.DIR:
            if not self.overwrite:
                os.mkdir(target, 0o700)  # its mode once its children are in
            elif not os.path.isdir(target):
                self._clear(target)
                os.mkdir(target, 0o700)
            self.stats.dirs += 1
            return
        if e.nlink > 1 and e.ino in self._links:
            self._window.links.append((self._links[e.ino], target))
            return
        if e.nlink > 1:
            self._links[e.ino] = target
        if e.kind == Kind.FILE:
            self._file(rel, e, target)
            return
        self._clear(target)
        if e.kind == Kind.SYMLINK:
            os.symlink(e.payload, target)
        elif e.kind in (Kind.CHR, Kind.BLK, Kind.FIFO, Kind.SOCKET):
            os.mknod(target, e.st_mode, e.rdev)
        else:
            raise CairnError(f"unknown kind {e.kind} at {os.fsdecode(target)}")
        _apply_meta(target, e, self._error)
        self._done(0)

    def _clear(self, target: bytes) -> None:
        """Make room for a non-directory at `target` when told to overwrite (else nothing is there)."""
        if not self.overwrite:
            return
        try:
            os.unlink(target)
        except FileNotFoundError:
            return
        except IsADirectoryError:
            raise CairnError(f"{os.fsdecode(target)} is a directory in the way") from None

    # -- file contents --------------------------------------------------------

    def _file(self, rel: bytes, e: Entry, target: bytes) -> None:
        if self.overwrite and os.path.isdir(target) and not os.path.islink(target):
            raise CairnError(f"{os.fsdecode(target)} is a directory in the way")
        extents = unpack_extents(e.payload)
        f = _File(rel, e, target, target[: target.rfind(b"/") + 1] + next(self._tmp_names), extents)
        if not f.left:  # empty, or holes only
            with f.lock:
                self._finish(f)
            return
        window, pos = self._window, 0
        for blob_id, length in extents:
            if blob_id != HOLE:
                window.blobs.setdefault(blob_id, []).append((f, pos, length))
            pos += length
        window.files += 1
        window.bytes += e.size
        if window.files >= WINDOW_FILES or window.bytes >= WINDOW_BYTES:
            self._send()

    def _send(self) -> None:
        """Hand the window to the runner once the one before it is read; the walk plans the next meanwhile."""
        window, self._window = self._window, _Window()
        self._wait()
        self._reading = self._runner.submit(self._read, window)

    def _wait(self) -> None:
        if self._reading is not None:
            reading, self._reading = self._reading, None
            reading.result()

    def flush(self) -> None:
        """Read what is planned and complete every file and hard link."""
        self._send()
        self._wait()

    def _read(self, window: _Window) -> None:
        if window.blobs:
            self.view.trees.blobs.read_many(
                list(window.blobs),
                lambda i, plain: self._arrived(window.blobs[i], plain),
                lambda i, e: self._failed(window.blobs[i], e),
            )
        for first, target in window.links:
            try:
                self._clear(target)
                os.link(first, target)
                self._done(0)
            except (OSError, CairnError) as err:
                self._failed_at(target, err)

    def _arrived(self, targets: list[tuple[_File, int, int]], plain: bytes) -> None:
        for f, pos, length in targets:
            with f.lock:
                if f.dead:
                    continue
                try:
                    _write_all(f.open(), memoryview(plain), pos)
                    self._add_bytes(length)
                    f.left -= 1
                    if not f.left:
                        self._finish(f)
                except (OSError, CairnError) as err:
                    f.abandon()
                    self._failed_at(f.target, err)

    def _failed(self, targets: list[tuple[_File, int, int]], e: CairnError) -> None:
        for f, _pos, _length in targets:
            with f.lock:
                if not f.dead:
                    f.abandon()
                    self._damaged(f.rel, e)

    def _finish(self, f: _File) -> None:
        """Metadata through the descriptor, then the real name. Holds `f.lock`."""
        fd = f.open()
        try:
            if f.ends_in_hole:
                os.ftruncate(fd, f.entry.size)
            _apply_meta(fd, f.entry, self._error, shown=f.target)
        finally:
            os.close(fd)
            f.fd = None
        try:
            os.rename(f.tmp, f.target)  # replaces a file at `target` in one step
        except OSError:
            f.abandon()
            raise
        self._done(f.holes)

    # -- accounting -------------------------------------------------------------

    def _done(self, holes: int) -> None:
        with self._lock:
            self.stats.files += 1
            self.stats.bytes += holes
        self.report()

    def _add_bytes(self, n: int) -> None:
        with self._lock:
            self.stats.bytes += n

    def _error(self, message: str) -> None:
        with self._lock:
            self.stats.errors.append(message)

    def _failed_at(self, target: bytes, err: OSError | CairnError) -> None:
        self._error(f"{os.fsdecode(target)}: {err.strerror}" if isinstance(err, OSError) else str(err))

    def _damaged(self, rel: bytes, e: CairnError) -> None:
        where = rel.decode("utf-8", "backslashreplace") or "/"
        with self._lock:
            if self.first_damage is None:
                self.first_damage = e
            self.stats.damaged.append(where)
            self.stats.errors.append(f"{self.view.label}: {where}: not restored: {e}")

    def report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._shown < PROGRESS_EVERY:
                return
            self._shown = now
            self.progress(self.stats)


def _parse_into(found: Listings, tree_id: bytes, plain: bytes) -> None:
    found[tree_id] = {e.name: e for e in deserialize(plain)}


def _write_all(fd: int, data: memoryview, pos: int) -> None:
    while data:
        written = os.pwrite(fd, data, pos)
        data, pos = data[written:], pos + written


def _apply_meta(target: bytes | int, e: Entry, note: Callable[[str], None], shown: bytes | None = None) -> None:
    """Owner, mode, xattrs and times of a path (not followed) or an open descriptor."""
    is_link = e.kind == Kind.SYMLINK
    by_path = not isinstance(target, int)
    with contextlib.suppress(PermissionError):  # not root: the restoring user owns them
        os.chown(target, e.uid, e.gid, follow_symlinks=not by_path)
    if not is_link:
        os.chmod(target, e.mode)
    for name, value in e.xattrs:
        try:
            os.setxattr(target, name, value, follow_symlinks=not by_path)
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EPERM):
                raise
            where = os.fsdecode(shown if shown is not None else target)  # type: ignore[arg-type]
            note(f"{where}: xattr {quoted(name)} not restored: {err.strerror}")
    os.utime(target, ns=(e.atime_ns, e.mtime_ns), follow_symlinks=not by_path)
