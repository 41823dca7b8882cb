"""The working tree of a source: names (see namespace.py), attributes, content, commits.

Changes reach the catalog in batches (`commit`), so an operation never
waits on a database write; it waits on a read only the first time it uses a
directory that is not in memory (see namespace.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..blobstore import BlobStore
from ..cache import check_may_block, memory_only
from ..catalog import Catalog
from ..content import ContentReader, Extents, hole, total_length
from ..errors import CairnError, Exists, InvalidArgument, IsADirectory, LostWrites, NotFound
from ..ids import HOLE
from ..meta import ACL_ACCESS, PERM_MASK, Kind, Stat, acl_mode, kind_of
from . import persist
from .inode import NO_XATTRS, ROOT, Inode, now_ns
from .namespace import RENAME_EXCHANGE, RENAME_NOREPLACE, Namespace, Quick, changes
from .spool import SpoolFile

log = logging.getLogger(__name__)

__all__ = ["RENAME_EXCHANGE", "RENAME_NOREPLACE", "ROOT", "NameWatcher", "Quick", "WorkingTree"]

# Told (source id, directory inode, name) whenever a name appears or goes; called
# with the tree's lock held, so it must only take note, never wait.
NameWatcher = Callable[[int, int, bytes], None]


class WorkingTree(Namespace):
    """The mutable tree of one source. Thread-safe.

    The namespace's `_lock` guards everything here too. It is held for
    microseconds only (the FUSE loop takes it inline): work on a file's bytes
    (spool writes, chunking on release, reads of stored chunks) happens
    outside it, under the spool's own lock. A spool being finished stays on
    its inode until the result is installed; writes to it wait for `done`.
    """

    def __init__(self, catalog: Catalog, source_id: int, blobs: BlobStore, spool_dir: Path):
        super().__init__()
        self.catalog = catalog
        self.source_id = source_id
        self.blobs = blobs
        self.spool_dir = spool_dir
        self._spool_seq = 0
        self.watchers: list[NameWatcher] = []
        persist.load(self)

    def _fault(self, ino: int) -> Inode:
        return persist.fault(self, ino)

    def _fill(self, d: Inode) -> None:
        persist.fill(self, d)

    def _named(self, parent: int, name: bytes) -> None:
        for watch in self.watchers:
            watch(self.source_id, parent, name)

    def _release_spool(self, inode: Inode) -> None:
        if inode.spool is not None and not inode.spool.finishing:  # else the finisher closes it
            inode.spool.close()
            self.blobs.inflight.end(inode.spool.session)
            inode.spool = None

    def _settled(self, ino: int) -> tuple[Inode, SpoolFile | None]:
        """A file's inode and spool once no release is finishing it; the caller holds `_lock`."""
        while True:
            inode = self._file(ino)
            spool = inode.spool
            if spool is None or not spool.finishing:
                return inode, spool
            check_may_block()
            self._lock.release()  # an RLock held once: wait for the finisher without it
            try:
                spool.done.wait()
            finally:
                self._lock.acquire()

    # -- attributes ----------------------------------------------------------

    @changes
    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
        ctime_ns: int | None = None,
    ) -> Stat:
        if size is not None:
            self._resize(ino, size)
        with self._lock:
            inode = self._get(ino)
            t = now_ns()
            if size is not None:
                inode.mtime_ns = t
            if mode is not None:
                inode.mode = mode & PERM_MASK
            if uid is not None:
                inode.uid = uid
            if gid is not None:
                inode.gid = gid
            if atime_ns is not None:
                inode.atime_ns = atime_ns
            if mtime_ns is not None:
                inode.mtime_ns = mtime_ns
            inode.ctime_ns = ctime_ns if ctime_ns is not None else t
            self._touch(inode)
            return inode.stat()

    def _resize(self, ino: int, size: int) -> None:
        if size < 0:
            raise InvalidArgument("negative size")
        while True:
            with self._lock:
                if self._get(ino).kind != Kind.FILE:
                    raise InvalidArgument("only regular files can be truncated")
                inode, spool = self._settled(ino)
                if spool is None:
                    kept: Extents | None
                    if inode.lost is not None and size:
                        inode.size = size  # still lost: only new content makes it whole
                        return
                    if size == 0:
                        inode.lost = None  # every byte is the client's again
                    if size >= inode.size:
                        kept = inode.extents + hole(size - inode.size)
                    else:  # shrinking: None when the cut falls inside a chunk
                        kept = [] if size == 0 else _cut_at(inode.extents, size)
                    if kept is not None:
                        inode.extents, inode.size = kept, size
                        return
                    spool = self._spool(inode)  # the cut falls inside a chunk: the spool rewrites it
            if spool.truncate(size):  # outside `_lock`: it may copy the file to disk
                with self._lock:
                    inode.size = size
                    if size == 0:
                        inode.lost = None
                return

    def getxattr(self, ino: int, name: bytes) -> bytes:
        with self._lock:
            value = self._get(ino).xattrs.get(name)
            if value is None:
                raise NotFound(f"no attribute {name!r}")
            return value

    def listxattr(self, ino: int) -> list[bytes]:
        with self._lock:
            return sorted(self._get(ino).xattrs)

    @changes
    def setxattr(self, ino: int, name: bytes, value: bytes, *, create: bool = False, replace: bool = False) -> None:
        if not name or len(name) > 255 or len(value) > 65536:
            raise InvalidArgument("xattr names are 1-255 bytes, values up to 64 KiB")
        with self._lock:
            inode = self._get(ino)
            if create and name in inode.xattrs:
                raise Exists(f"attribute {name!r} exists")
            if replace and name not in inode.xattrs:
                raise NotFound(f"no attribute {name!r}")
            if name == ACL_ACCESS:
                # As the kernel does on a real file system: the ACL sets the mode's bits.
                inode.mode = acl_mode(value, inode.mode)
            inode.xattrs = {**inode.xattrs, name: value}
            inode.ctime_ns = now_ns()
            self._touch(inode)

    @changes
    def removexattr(self, ino: int, name: bytes) -> None:
        with self._lock:
            inode = self._get(ino)
            if name not in inode.xattrs:
                raise NotFound(f"no attribute {name!r}")
            inode.xattrs = {k: v for k, v in inode.xattrs.items() if k != name} or NO_XATTRS
            inode.ctime_ns = now_ns()
            self._touch(inode)

    # -- content -------------------------------------------------------------

    def _file(self, ino: int) -> Inode:
        inode = self._get(ino)
        if inode.kind != Kind.FILE:
            raise (IsADirectory if inode.is_dir else InvalidArgument)(f"inode {ino} is not a regular file")
        return inode

    def _spool(self, inode: Inode) -> SpoolFile:
        if inode.spool is None:
            self._spool_seq += 1
            path = self.spool_dir / f"{inode.ino}.{self._spool_seq}"
            inode.spool = SpoolFile(path, self.blobs, inode.extents, inode.size)
        return inode.spool

    @changes
    def open(self, ino: int) -> Stat:
        with self._lock:
            inode = self._get(ino)
            inode.opens += 1
            return inode.stat()

    @changes
    def release(self, ino: int) -> None:
        """The last handle of a file closed: its spool, if flush left one, is finished.

        Raises what lost a named file's writes (the mount's kernel drops it: `flush` is where a client hears).
        """
        with self._lock:
            inode = self._get(ino)
            spool = inode.spool
            last = inode.opens <= 1 and spool is not None and not spool.finishing
            if last and spool is not None and (not spool.light or spool.busy):
                check_may_block()  # the last release chunks the spool
            inode.opens = max(0, inode.opens - 1)
            if not last or spool is None:
                self._free_if_unused(inode)
                return
            spool.finishing = True
        try:
            self._finish(inode, spool)
        except CairnError:
            with self._lock:
                if inode.parents:
                    raise
            # No name: the bytes matter to nobody (a WebDAV body being dropped)

    @changes
    def flush(self, ino: int) -> None:
        """A handle of a file is closed: store what it holds, and raise what lost its writes.

        The client hears of a lost write here, at close(), as from a local
        disk. The bytes go to the blob store (encoded and packed in the
        background); a later write reopens a spool on the stored content.
        May block (chunking a spool), unless the spool is small and in memory.
        """
        with self._lock:
            inode = self._get(ino)
            spool = inode.spool
            if inode.kind != Kind.FILE or spool is None or spool.finishing or not inode.parents:
                return  # nothing to store, or a release is storing it, or no name to store it under
            if not spool.light or spool.busy:
                check_may_block()
            spool.finishing = True
        self._finish(inode, spool)

    def _finish(self, inode: Inode, spool: SpoolFile) -> None:
        """Chunk a spool marked `finishing` and install its content on the inode; re-raises a failure."""
        extents: Extents = []
        blocking = memory_only.set(False)  # committed to finishing now; a light one takes microseconds
        try:
            extents = spool.finish()  # outside `_lock`: chunking a large spool takes a while
        finally:
            memory_only.reset(blocking)
            spool.close()
            with self._lock:
                if inode.spool is spool:
                    inode.spool = None
                    inode.extents = extents
                    inode.size = total_length(extents)
                    if spool.finished is None:
                        # The writes are lost: the file is, until rewritten. Its size
                        # stays what the client wrote (a quick check fails on mtime 0).
                        inode.size = spool.size
                        inode.mtime_ns = 0
                        inode.lost = str(spool.failure or "its writes were not stored")
                    if self._inodes.get(inode.ino) is inode:
                        self._touch(inode)
                        self._free_if_unused(inode)
            self.blobs.inflight.end(spool.session)  # only now: the chunks are referenced from the inode
            spool.done.set()

    @changes
    def write(self, ino: int, offset: int, data: bytes) -> int:
        if offset < 0:
            raise InvalidArgument("negative offset")
        with self._lock:
            inode, spool = self._settled(ino)
            if spool is None:
                spool = self._spool(inode)
        spool.write(offset, data)  # outside `_lock`: it may write to disk or chunk
        with self._lock:
            inode.size = spool.size
            inode.mtime_ns = inode.ctime_ns = now_ns()
            self._touch(inode)
        return len(data)

    def read(self, ino: int, offset: int, size: int) -> bytes:
        with self._lock:
            inode = self._file(ino)
            spool, extents = inode.spool, inode.extents
            if inode.lost is not None and spool is None:
                raise LostWrites(f"the file's last writes were lost: {inode.lost}")
        if spool is not None:
            return spool.read(offset, size)
        return ContentReader(self.blobs, extents).read(offset, size)

    @changes
    def fsync(self, ino: int) -> None:
        """fsync(2): raise what lost the file's writes or keeps the pool from storing them (may block).

        The spool file reaches the disk; chunks already accepted stay in the
        blob store's queue (storing each fsync's open pack would make one pack
        a file under `rsync --fsync`), and a snapshot waits for them.
        """
        with self._lock:
            inode = self._get(ino)
            spool, lost = inode.spool, inode.lost
        if lost is not None and spool is None:
            raise LostWrites(f"the file's last writes were lost: {lost}")
        if spool is not None:
            spool.fsync()
            if spool.failure is not None:
                raise LostWrites(f"writes to this file were lost: {spool.failure}", cause=spool.failure)
        self.blobs.check()

    @changes
    def set_content(self, ino: int, extents: Extents) -> None:
        """Replace a file's content with stored chunks (the backup fast path)."""
        with self._lock:
            inode = self._file(ino)
            if inode.spool is not None:
                raise InvalidArgument(f"inode {ino} is open for writing")
            inode.extents = extents
            inode.size = total_length(extents)
            inode.lost = None
            self._touch(inode)

    @changes
    def add(
        self, parent: int, name: bytes, st: os.stat_result, xattrs: dict[bytes, bytes],
        content: Extents | None = None, target: bytes | None = None,
    ) -> int:  # fmt: skip
        """Add a node with all its metadata in one step (the backup fast path)."""
        kind = kind_of(st.st_mode)
        if (kind == Kind.FILE) != (content is not None) or (kind == Kind.SYMLINK) != (target is not None):
            raise InvalidArgument("a file needs content, a symlink a target, nothing else either")
        with self._lock:
            inode = self._create(parent, name, kind, st.st_mode, st.st_uid, st.st_gid)
            if content is not None:
                inode.extents = content
                inode.size = total_length(content)
            elif target is not None:
                inode.target, inode.size = target, len(target)
            elif kind in (Kind.CHR, Kind.BLK):
                inode.rdev = st.st_rdev
            inode.xattrs = xattrs or NO_XATTRS
            inode.origin = st.st_ino
            inode.atime_ns, inode.mtime_ns, inode.ctime_ns = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
            return inode.ino

    def xattrs(self, ino: int) -> Mapping[bytes, bytes]:
        """A node's extended attributes: a mapping that is never changed (a change replaces it)."""
        with self._lock:
            return self._get(ino).xattrs

    @changes
    def set_xattrs(self, ino: int, xattrs: Mapping[bytes, bytes]) -> None:
        """Replace every extended attribute at once (the backup fast path)."""
        with self._lock:
            inode = self._get(ino)
            if inode.xattrs != xattrs:
                inode.xattrs = dict(xattrs) or NO_XATTRS
                self._touch(inode)

    @changes
    def set_origin(self, ino: int, origin: int) -> None:
        with self._lock:
            inode = self._get(ino)
            if inode.origin != origin:
                inode.origin = origin
                self.dirty.add(ino)

    # -- persistence ---------------------------------------------------------

    def commit(self) -> None:
        """Write the changes since the last commit to the catalog."""
        persist.commit(self)

    def preload(self) -> bool:
        """Load the whole tree in two scans if it fits `keep` (for a walk of all of it, a backup).

        Directory by directory, a walk reads the catalog at random: twice as long from a cold cache.
        """
        with self.commit_lock, self._lock:
            persist.commit_held(self)
            filled = persist.load_all(self, self.keep)
            if filled is not None:
                self._residency.listed(*filled)
            return filled is not None

    def let_go(self, idle: float) -> bool:
        """Mark the tree unloaded if no change began for `idle` seconds and nothing is pending or open.

        The caller then drops it and gives up its lease; a change that reaches it later raises Unloaded.
        """
        if time.monotonic() - self.used_at < idle:
            return False
        self.commit()
        with self._lock:
            if self.changing or self.dirty or self.gone or self.dirents or self.unstored:
                return False
            if time.monotonic() - self.used_at < idle:
                return False
            if any(i.opens or i.spool is not None for i in self._inodes.values()):
                self.used_at = time.monotonic()  # a file held open: look again in `idle` seconds, not each time
                return False
            self.unloaded = True
            return True

    def close(self) -> None:
        with self._lock:
            for inode in list(self._inodes.values()):
                if inode.spool is not None:
                    inode.opens = 1
                    try:
                        self.release(inode.ino)
                    except CairnError as e:  # the file is marked lost; the others still close
                        log.warning("closing inode %d of source %d: its writes were lost: %s", inode.ino,
                                    self.source_id, e)  # fmt: skip
        self.commit()


def _cut_at(extents: Extents, size: int) -> Extents | None:
    """The extents up to `size`, or None if that falls inside a stored chunk."""
    out: Extents = []
    pos = 0
    for blob_id, n in extents:
        if pos + n <= size:
            out.append((blob_id, n))
            pos += n
            continue
        if pos == size:
            break
        if blob_id == HOLE:
            out.append((HOLE, size - pos))
            break
        return None
    return out
