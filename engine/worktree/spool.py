"""Spool files: the bytes written to an open working-tree file, on local disk.

Writes that arrive in order are chunked as they stream; once a write goes
back or overwrites, the file is chunked from the spool when it is released.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from ..blobstore import BlobStore
from ..content import ContentReader, Extents
from ..errors import CairnError, NoSpace
from ..ingest import ChunkStream, chunk_fd

P = ParamSpec("P")
T = TypeVar("T")


class SpoolFile:
    """One open file's bytes. Thread-safe: `_lock` guards the file and the stream."""

    def __init__(self, path: Path, blobs: BlobStore, base: Extents, base_size: int):
        self.path = path
        self.blobs = blobs
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.size = base_size
        # Streaming: every write so far came in order from offset 0.
        self._stream: ChunkStream | None = None
        try:
            if base_size == 0:
                self._stream = ChunkStream(self._put)
            else:
                self._materialize(base, base_size)
        except BaseException:
            self.close()
            raise

    def _put(self, chunk: bytes) -> bytes:
        return self.blobs.put(chunk)

    def _materialize(self, base: Extents, size: int) -> None:
        reader = ContentReader(self.blobs, base)
        for start, run in reader.data_ranges():
            pos = start
            for blob_id, n in run:
                self._pwrite(self.blobs.get(blob_id), pos)
                pos += n
        _check(os.ftruncate, self._fd, size)

    def _pwrite(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = _check(os.pwrite, self._fd, view, offset)
            view, offset = view[written:], offset + written

    def write(self, offset: int, data: bytes) -> int:
        with self._lock:
            self._pwrite(data, offset)
            stream = self._stream
            if stream is not None:
                if offset >= stream.pos:
                    stream.skip_to(offset)
                    stream.write(data)
                else:
                    self._stream = None
            self.size = max(self.size, offset + len(data))
            return self.size

    def truncate(self, size: int) -> None:
        with self._lock:
            _check(os.ftruncate, self._fd, size)
            if self._stream is not None and size < self._stream.pos:
                self._stream = None
            self.size = size

    def read(self, offset: int, size: int) -> bytes:
        with self._lock:
            return os.pread(self._fd, size, offset)

    def allocated(self) -> int:
        return os.fstat(self._fd).st_blocks * 512

    def fsync(self) -> None:
        _check(os.fsync, self._fd)

    def finish(self) -> Extents:
        """The content as a chunk list; the spool stays usable only if not streaming."""
        with self._lock:
            if self._stream is not None:
                extents = self._stream.finish(self.size)
                self._stream = None
                return extents
            return chunk_fd(self._fd, self.size, self._put)

    def checkpoint(self) -> Extents:
        """The content as a chunk list, leaving the spool open for more writes."""
        with self._lock:
            return chunk_fd(self._fd, self.size, self._put)

    def close(self) -> None:
        try:
            os.close(self._fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _check(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call an os function; a full disk becomes NoSpace, other failures CairnError."""
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(f"spool disk is full: {e.strerror}") from e
        raise CairnError(f"spool file error: {e.strerror}") from e
