"""Reading a directory's small files (bytes and xattrs) ahead of a walk, on a few threads.

A first backup from a cold page cache otherwise waits for the disk once or
twice per file (the data, and the xattr listing), one file at a time. With
several reads in flight the disk serves them together while the walk hashes
and records the files before them.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

READERS = 4
WINDOW = 32  # files read ahead of the walk in one directory
BUDGET = 16 << 20  # bytes read ahead and not yet taken, across all directories


def open_flags(st_uid: int) -> int:
    """O_NOATIME where the kernel allows it (the file's owner, or root): reading must not change the source."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    return flags | os.O_NOATIME if st_uid == os.geteuid() or os.geteuid() == 0 else flags


def read_xattrs(target: bytes | int) -> dict[bytes, bytes]:
    """The xattrs of a path (not followed if a symlink) or of an open file."""
    follow = {} if isinstance(target, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(target, **follow)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    out = {}
    for name in names:
        try:
            out[name.encode("utf-8", "surrogateescape")] = os.getxattr(target, name, **follow)
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise
    return out


class File(NamedTuple):
    data: bytes
    xattrs: dict[bytes, bytes]


def _read(path: bytes, size: int, flags: int) -> File:
    fd = os.open(path, flags)
    try:
        return File(os.pread(fd, size, 0), read_xattrs(fd))
    finally:
        os.close(fd)


class ReadAhead:
    """The reader threads and the byte budget they share. Thread-safe."""

    def __init__(self, readers: int = READERS, budget: int | None = None):
        self._pool = ThreadPoolExecutor(readers, thread_name_prefix="cairn-walkread")
        self._lock = threading.Lock()
        self._free = BUDGET if budget is None else budget

    def directory(self, files: list[tuple[bytes, int, int]]) -> Window:
        """A window over one directory's files to read, (path, size, uid) in the order the walk takes them."""
        return Window(self, files)

    def _reserve(self, size: int) -> bool:
        with self._lock:
            if size > self._free:
                return False
            self._free -= size
            return True

    def _release(self, size: int) -> None:
        with self._lock:
            self._free += size

    def _submit(self, path: bytes, size: int, uid: int) -> Future[File]:
        return self._pool.submit(_read, path, size, open_flags(uid))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Window:
    """Up to WINDOW files of one directory in flight. Used by one thread (the walk's)."""

    def __init__(self, owner: ReadAhead, files: list[tuple[bytes, int, int]]):
        self._owner = owner
        self._todo = deque(files)
        self._reads: dict[bytes, tuple[Future[File], int]] = {}
        self._fill()

    def _fill(self) -> None:
        # Without budget the walk reads the rest itself: a parent directory's window may hold it meanwhile.
        while self._todo and len(self._reads) < WINDOW:
            path, size, uid = self._todo[0]
            if not self._owner._reserve(size):
                return
            self._todo.popleft()
            self._reads[path] = (self._owner._submit(path, size, uid), size)

    def take(self, path: bytes) -> File | None:
        """What was read ahead for `path`, or None (not read ahead, or the read failed: the walk reads it
        again and reports the error itself)."""
        read = self._reads.pop(path, None)
        if read is None:
            return None
        future, size = read
        try:
            return future.result()
        except OSError:
            return None
        finally:
            self._owner._release(size)
            self._fill()

    def close(self) -> None:
        """Drop what the walk did not take (files it linked or skipped)."""
        for future, size in self._reads.values():
            future.cancel()  # one already reading finishes, and its bytes are dropped
            self._owner._release(size)
        self._reads.clear()
        self._todo.clear()
