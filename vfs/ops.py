"""pyfuse3 operations over the engine's MountView: translation and nothing else.

Calls that may block (reading chunks, writing spool files, chunking on
release, taking a snapshot, catalog queries) go to a worker thread through
`_call`. Calls that only touch the in-memory working tree run on the loop
through `_now`: a thread hop costs ~180 µs here, and rsync makes about 20
requests a file, so hopping for a dictionary lookup cut throughput by 3.5x
(measured: 5,000 small files in 21 s with every call in a thread, 6 s inline).
Engine errors become the errno a real file system would give. Changes made
by processes a front door watches (writers.py) are noted as they pass.

Snapshots never change, so the kernel is told as much as it can keep: their
attributes are built once, and a listed directory's small files are put in
its page cache ahead of the reads (`_push`), which tar then never sends.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pyfuse3
import trio

from engine.cache import WouldBlock, memory_only
from engine.errors import CairnError
from engine.meta import NAME_MAX, Stat
from engine.mount import MountView
from engine.mount.nodes import IMAGE, SNAPSHOT, VIRTUAL, WORKING, node_of

from .writers import Writers

log = logging.getLogger(__name__)
T = TypeVar("T")

# Set for every request the mount serves (mount.py): the kernel knows of the changes they make.
in_request: contextvars.ContextVar[bool] = contextvars.ContextVar("in_request", default=False)

# What cannot change may be cached long. A working tree's names change through
# this mount, which the kernel sees, or by another path (WebDAV, a restore) in
# this process, which the kernel is told of (`_name_changed`); its attributes
# change by those paths too, untold, so they are asked again each second.
FALLOC_FL_KEEP_SIZE = 0x01  # linux/falloc.h (the os module does not name it)
SNAPSHOT_TIMEOUT = 300.0
NAME_TIMEOUT = 60.0  # a working tree's names, present or missing
WORKING_TIMEOUT = 1.0  # a working tree's attributes
VIRTUAL_TIMEOUT = 1.0  # sources and snapshots: other processes add and delete them too
# A pushed page waits for its node this long at most (the listing's reply is on its way).
PUSH_TRIES, PUSH_WAIT = 4, 0.001
# An open that will not write says that its close() needs no FLUSH request
# (FOPEN_NOFLUSH: pyfuse3 built with vfs/pyfuse3-noflush.patch), so tar reads
# a snapshot with 2 requests a file, not 3: a FLUSH each cost tar 25-40% here
# (5,000 small files, best of 3: 6,400-6,600 files/s without, 3,900-5,000 with).
# A plain pyfuse3 sends them all.
NO_FLUSH: dict[str, bool] = {"noflush": True} if hasattr(pyfuse3.FileInfo(), "noflush") else {}


class Operations(pyfuse3.Operations):
    """Runs on the trio loop, but for `_push` on its own thread, which only reads the view.

    State beyond the engine's is what the kernel holds: open directory
    listings and snapshot attributes (touched on the loop only).
    """

    enable_writeback_cache = False

    def __init__(self, view: MountView, threads: int = 8, writers: Writers | None = None):
        super().__init__()
        self.view = view
        self.writers = writers  # the processes a front door watches (writers.py), or None
        self._writing: dict[int, int] = {}  # file handle -> the watched process that opened it to write
        self.limiter = trio.CapacityLimiter(threads)
        self._dirs: dict[int, tuple[int, list[tuple[bytes, Stat]]]] = {}  # handle -> (directory, listing)
        # Attributes of the snapshot nodes the kernel holds, until it forgets them.
        # A snapshot never changes, so they are built once: tar asks getattr of
        # every file it reads (a read drops the kernel's atime), 6 µs -> 0.4 µs.
        self._snapshot_attrs: dict[int, pyfuse3.EntryAttributes] = {}
        # Listed snapshot directories whose small files go to the kernel's page
        # cache once listed (see _push); one thread, as the files are read in order.
        self._unpushed: dict[int, int] = {}
        self._pusher: ThreadPoolExecutor | None = None
        self._stop_pushing = threading.Event()
        # Names changed by other paths, told to the kernel one by one (see _name_changed).
        self._teller: ThreadPoolExecutor | None = None
        self._unwatch: Callable[[], None] | None = None
        self._dir_handles = itertools.count(1)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a call that may block on a worker thread."""
        try:
            return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter)
        except Exception as e:
            raise _fuse_error(e) from None

    async def _on(self, number: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """In place if the answer is in memory; on a thread if it needs the pool, a spool file or the catalog."""
        token = memory_only.set(True)
        try:
            return self._now(fn, number, *args, **kwargs)
        except WouldBlock:
            pass
        finally:
            memory_only.reset(token)
        return await self._call(fn, number, *args, **kwargs)

    def _now(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a call on the in-memory tree right here: it holds a lock for microseconds."""
        try:
            return fn(*args, **kwargs)
        except WouldBlock:
            raise
        except Exception as e:
            raise _fuse_error(e) from None

    def _watched(self, ctx: pyfuse3.RequestContext) -> bool:
        return self.writers is not None and ctx.pid in self.writers.watched

    def _noted(self, ctx: pyfuse3.RequestContext, number: int, entries: int = 1) -> None:
        """Note a change, made, to a working tree by a watched process."""
        if self._watched(ctx):
            node = node_of(number)
            if node.space == WORKING:
                assert self.writers is not None
                self.writers.note(ctx.pid, node.owner, 0, entries)

    def init(self) -> None:
        """Mounted: the kernel takes pushed pages and changed names from now on."""
        self._pusher = ThreadPoolExecutor(1, thread_name_prefix="cairn-push")
        self._teller = ThreadPoolExecutor(1, thread_name_prefix="cairn-names")
        self._unwatch = self.view.watch_names(self._name_changed)

    def close(self) -> None:
        """Stop pushing pages and telling names; returns once neither is in progress.

        Call it while the loop still answers requests, or once the kernel has
        dropped the mount: a push may wait for a READ of its page, and telling
        a name for a request on its directory.
        """
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self._stop_pushing.set()
        for pool in (self._pusher, self._teller):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _name_changed(self, directory: int, name: bytes) -> None:
        """A working tree's name appeared or went: unless through this mount, the kernel drops what it holds of it.

        Called with the tree's lock held; the kernel is told from a thread of
        its own, as it may first wait for a request on that directory, which
        may need the lock.
        """
        if in_request.get() or self._teller is None:
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile: unmounting
            self._teller.submit(self._tell, directory, name)

    @staticmethod
    def _tell(directory: int, name: bytes) -> None:
        try:
            pyfuse3.invalidate_entry(directory, name)
        except FileNotFoundError:
            pass  # the kernel holds nothing there
        except OSError as e:
            log.debug("the kernel was not told of %r in node %d: %s", name, directory, e)

    def _push(self, inode: int) -> None:
        """Put a listed snapshot directory's small files into the kernel's page cache.

        Reading them then costs no READ, and no GETATTR either (a READ drops
        the kernel's atime): tar asks 2 requests a file instead of 4. Runs on
        its own thread: the kernel may wait for a READ of the same page, which
        the loop answers. The kernel knows a node only once the listing's reply
        reached it, hence the short waits on ENOENT.
        """
        try:
            for number, content in self.view.small_contents(inode):
                if self._stop_pushing.is_set():
                    return
                for _ in range(PUSH_TRIES):
                    try:
                        pyfuse3.notify_store(number, 0, content)
                        break
                    except OSError as e:
                        if e.errno != errno.ENOENT:
                            raise
                        time.sleep(PUSH_WAIT)
        except Exception as e:  # pushing only saves requests; reads work without it
            log.debug("pushing the files of node %d stopped: %s", inode, e)

    # -- attributes ----------------------------------------------------------

    def _attr(self, stat: Stat) -> pyfuse3.EntryAttributes:
        space = stat.ino >> 62
        if space == SNAPSHOT:
            cached = self._snapshot_attrs.get(stat.ino)
            if cached is None:
                cached = self._snapshot_attrs[stat.ino] = self._new_attr(stat, space)
            return cached
        return self._new_attr(stat, space)

    def _new_attr(self, stat: Stat, space: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = stat.ino
        a.generation = 0
        if space == WORKING:
            a.entry_timeout, a.attr_timeout = NAME_TIMEOUT, WORKING_TIMEOUT
        else:
            a.entry_timeout = a.attr_timeout = SNAPSHOT_TIMEOUT if space == SNAPSHOT else VIRTUAL_TIMEOUT
        a.st_mode = stat.mode
        a.st_nlink = stat.nlink
        a.st_uid = stat.uid
        a.st_gid = stat.gid
        a.st_rdev = stat.rdev
        a.st_size = stat.size
        a.st_blksize = 128 << 10
        a.st_blocks = stat.blocks
        a.st_atime_ns = stat.atime_ns
        a.st_mtime_ns = stat.mtime_ns
        a.st_ctime_ns = stat.ctime_ns
        return a

    def _entry_attr(self, parent_inode: int, stat: Stat) -> pyfuse3.EntryAttributes:
        """The reply to a lookup or mkdir of `stat` in `parent_inode`."""
        if stat.ino >> 62 == SNAPSHOT and node_of(parent_inode).space == VIRTUAL:
            # A snapshot's name in snapshots/ may be deleted and taken again (by
            # another process too): the name is looked up again each second, while
            # everything below it, which never changes, stays cached for minutes.
            attr = self._new_attr(stat, SNAPSHOT)
            attr.entry_timeout = VIRTUAL_TIMEOUT
            return attr
        return self._attr(stat)

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if name == b".":
            return await self.getattr(parent_inode, ctx)
        if len(name) > NAME_MAX:  # every call on a path passes a lookup of each of its names first
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        try:
            return self._entry_attr(parent_inode, await self._on(parent_inode, self.view.lookup, name))
        except pyfuse3.FUSEError as e:
            if e.errno == errno.ENOENT:
                # A negative entry the kernel may cache: rsync's generator looks up every
                # name, and its receiver the same name again, often seconds later.
                a = pyfuse3.EntryAttributes()
                a.st_ino = 0
                a.entry_timeout = NAME_TIMEOUT if node_of(parent_inode).space == WORKING else 0
                return a
            raise

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for number, count in inode_list:
            if number >> 62 == SNAPSHOT and self.view.forget(number, count):  # in memory only: no thread needed
                self._snapshot_attrs.pop(number, None)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        cached = self._snapshot_attrs.get(inode)
        if cached is not None:
            return cached
        return self._attr(await self._on(inode, self.view.getattr))

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        changes: dict[str, int | None] = {
            "mode": attr.st_mode if fields.update_mode else None,
            "uid": attr.st_uid if fields.update_uid else None,
            "gid": attr.st_gid if fields.update_gid else None,
            "size": attr.st_size if fields.update_size else None,
            "atime_ns": attr.st_atime_ns if fields.update_atime else None,
            "mtime_ns": attr.st_mtime_ns if fields.update_mtime else None,
        }
        # A size change rewrites a spool only when it cuts into written bytes: then it hops to a thread.
        stat = await self._on(inode, self.view.setattr, **changes)
        self._noted(ctx, inode, 0)
        return self._attr(stat)

    async def fallocate(self, inode: int, fh: int, mode: int, offset: int, length: int) -> None:
        """fallocate(2): the plain mode makes the file at least offset + length long; KEEP_SIZE alone
        changes nothing. Space is not set aside: what bytes take in a deduplicating, compressing pool
        is known only once they are written. Punching holes, zeroing and collapsing ranges: EOPNOTSUPP.
        """
        if mode & ~FALLOC_FL_KEEP_SIZE:
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        if offset < 0 or length <= 0:
            raise pyfuse3.FUSEError(errno.EINVAL)
        stat = await self._on(inode, self.view.getattr)
        if not mode and offset + length > stat.size:  # extends: a thread only if the spool is busy
            await self._on(inode, self.view.setattr, size=offset + length)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return await self._on(inode, self.view.readlink)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        usage = await self._call(self.view.statfs)
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = usage["blocks"]
        s.f_bfree = s.f_bavail = usage["free"]
        s.f_files = usage["files"] + (1 << 20)
        s.f_ffree = s.f_favail = 1 << 20
        s.f_namemax = NAME_MAX
        return s

    # -- names ---------------------------------------------------------------

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        args = (parent_inode, name, mode & ~ctx.umask, ctx.uid, ctx.gid)
        if node_of(parent_inode).space == WORKING:
            attr = self._attr(self._now(self.view.mkdir, *args))
            self._noted(ctx, parent_inode)
            return attr
        return self._entry_attr(parent_inode, await self._call(self.view.mkdir, *args))  # a source or a snapshot

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if node_of(parent_inode).space == WORKING:
            self._now(self.view.rmdir, parent_inode, name)
            self._noted(ctx, parent_inode)
        else:
            await self._call(self.view.rmdir, parent_inode, name)

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        stat = self._now(self.view.mknod, parent_inode, name, mode & ~ctx.umask, rdev, ctx.uid, ctx.gid)
        self._noted(ctx, parent_inode)
        return self._attr(stat)

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        stat = self._now(self.view.symlink, parent_inode, name, target, ctx.uid, ctx.gid)
        self._noted(ctx, parent_inode)
        return self._attr(stat)

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        stat = self._now(self.view.link, inode, new_parent_inode, new_name)
        self._noted(ctx, new_parent_inode)
        return self._attr(stat)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if node_of(parent_inode).space == WORKING:
            self._now(self.view.unlink, parent_inode, name)
            self._noted(ctx, parent_inode)
        else:
            await self._call(self.view.unlink, parent_inode, name)  # a disk image

    async def rename(
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes, flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:  # fmt: skip
        self._now(self.view.rename, parent_inode_old, name_old, parent_inode_new, name_new, flags)
        self._noted(ctx, parent_inode_new)

    # -- files ---------------------------------------------------------------

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        args = (parent_inode, name, mode & ~ctx.umask, ctx.uid, ctx.gid)
        if node_of(parent_inode).space == WORKING:
            stat = self._now(self.view.create, *args)
        else:
            stat = await self._call(self.view.create, *args)  # a disk image
        self._opened(ctx, stat.ino)
        return pyfuse3.FileInfo(fh=stat.ino), self._attr(stat)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        write = flags & os.O_ACCMODE != os.O_RDONLY
        space = inode >> 62
        if space == SNAPSHOT:  # never does I/O: answered here, as release is (tar: 2 requests a file)
            self._now(self.view.open, inode, write)
            return pyfuse3.FileInfo(fh=inode, keep_cache=True, **NO_FLUSH)
        await self._on(inode, self.view.open, write)
        if write:
            self._opened(ctx, inode)
        if flags & os.O_TRUNC and space in (WORKING, IMAGE):
            await self._on(inode, self.view.setattr, size=0)  # no I/O unless a spool is busy
        flushed = write and space == WORKING  # only then does close() store anything (see flush)
        return pyfuse3.FileInfo(fh=inode, keep_cache=False, **({} if flushed else NO_FLUSH))

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self._on(fh, self.view.read, off, size)

    def _opened(self, ctx: pyfuse3.RequestContext, number: int) -> None:
        """A file opened to write: a watched process's writes to it are counted (write requests carry no pid)."""
        if self._watched(ctx) and number >> 62 == WORKING:
            self._writing[number] = ctx.pid
            self._noted(ctx, number)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        written = await self._on(fh, self.view.write, off, buf)
        if self._writing and fh in self._writing:
            assert self.writers is not None
            self.writers.note(self._writing[fh], node_of(fh).owner, written)
        return written

    async def flush(self, fh: int) -> None:
        """close(2): the file's bytes are stored here, not on release, whose errors the kernel drops.

        A request more a file (about 21 instead of 20 under rsync), the price
        of a close() that fails when the bytes could not be stored.
        """
        if fh >> 62 == WORKING:
            await self._on(fh, self.view.flush)

    async def release(self, fh: int) -> None:
        self._writing.pop(fh, None)
        if fh >> 62 == SNAPSHOT:
            self._now(self.view.release, fh)
            return
        await self._on(fh, self.view.release)

    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._call(self.view.fsync, fh)

    # -- directories ---------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        listing = await self._on(inode, self.view.listdir)
        fh = next(self._dir_handles)
        self._dirs[fh] = (inode, listing)
        if inode >> 62 == SNAPSHOT and self._pusher is not None:
            self._unpushed[fh] = inode
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        inode, listing = self._dirs.get(fh, (0, []))
        # Entries come back as lookups do (readdirplus): snapshots/ names for a second, as _entry_attr says.
        attr = functools.partial(self._entry_attr, inode) if node_of(inode).space == VIRTUAL else self._attr
        for i in range(start_id, len(listing)):
            name, stat = listing[i]
            if not pyfuse3.readdir_reply(token, name, attr(stat), i + 1):
                break
        pushed = self._unpushed.pop(fh, None)
        if pushed is not None and self._pusher is not None and not self._stop_pushing.is_set():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: unmounting
                self._pusher.submit(self._push, pushed)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)
        self._unpushed.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    # -- extended attributes -------------------------------------------------

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        value = (await self._on(inode, self.view.xattrs)).get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return sorted(await self._on(inode, self.view.xattrs))

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._now(self.view.setxattr, inode, name, value)
        self._noted(ctx, inode, 0)

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        try:
            self._now(self.view.removexattr, inode, name)
        except pyfuse3.FUSEError as e:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR if e.errno == errno.ENOENT else e.errno) from None
        self._noted(ctx, inode, 0)


def _fuse_error(e: Exception) -> pyfuse3.FUSEError:
    """The errno a file system gives; anything unexpected is logged and is EIO, never the end of the mount."""
    if isinstance(e, CairnError):
        return pyfuse3.FUSEError(e.errno)
    if isinstance(e, OSError) and e.errno:
        return pyfuse3.FUSEError(e.errno)
    log.error("unexpected error in a file system request", exc_info=e)
    return pyfuse3.FUSEError(errno.EIO)
