"""Spool files: the bytes written to an open working-tree file.

Writes that arrive in order are chunked as they stream and need no disk at
all: the chunker holds at most 8 MiB, and finished chunks go to the blob
store. The first write that goes back, or a write into existing content,
moves the file to a spool file on local disk, and it is chunked from there
when it is released.
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
from ..cache import check_may_block
from ..content import ContentReader, Extents
from ..errors import CairnError, NoSpace
from ..ids import HOLE
from ..ingest import ChunkStream, chunk_fd

# Below this a streamed file is finished in memory: one small chunk to hash.
IN_MEMORY = 1 << 20
P = ParamSpec("P")
T = TypeVar("T")


class SpoolFile:
    """One open file's bytes. Thread-safe: `_lock` guards the stream and the file."""

    def __init__(self, path: Path, blobs: BlobStore, base: Extents, base_size: int):
        self.path = path
        self.blobs = blobs
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.size = base_size
        # While not None, every write so far came in order: no spool file yet.
        self._stream: ChunkStream | None = None
        if base_size == 0:
            self._stream = ChunkStream(self.blobs.put)
        else:
            self._to_disk(base)

    def _to_disk(self, content: Extents, tail: bytes = b"") -> None:
        """Move the file's content to a spool file on local disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = _check(os.open, self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            reader = ContentReader(self.blobs, content)
            for start, run in reader.data_ranges():
                pos = start
                for blob_id, n in run:
                    self._pwrite(self.blobs.get(blob_id), pos)
                    pos += n
            if tail:
                self._pwrite(tail, reader.size)
            _check(os.ftruncate, self._fd, self.size)
        except BaseException:
            self._drop_file()
            raise

    def _leave_stream(self) -> int:
        if self._stream is not None:
            self._to_disk(self._stream.extents, self._stream.buffered)
            self._stream = None  # only now: if the disk is full, the stream still holds everything
        assert self._fd is not None
        return self._fd

    def _pwrite(self, data: bytes | memoryview, offset: int) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = _check(os.pwrite, self._fd, view, offset)
            view, offset = view[written:], offset + written

    def write(self, offset: int, data: bytes) -> int:
        with self._lock:
            stream = self._stream
            if stream is None or offset < stream.pos or stream.pending + len(data) >= IN_MEMORY:
                check_may_block()  # disk I/O, or chunks to cut and hash
            if stream is not None and offset >= stream.pos:
                stream.skip_to(offset)
                stream.write(data)
            else:
                self._leave_stream()
                self._pwrite(data, offset)
            self.size = max(self.size, offset + len(data))
            return self.size

    def truncate(self, size: int) -> None:
        with self._lock:
            if self._stream is None or size < self._stream.pos:
                _check(os.ftruncate, self._leave_stream(), size)
            self.size = size

    def read(self, offset: int, size: int) -> bytes:
        check_may_block()
        with self._lock:
            end = min(offset + size, self.size)
            if offset >= end:
                return b""
            if self._fd is not None:
                return os.pread(self._fd, end - offset, offset)
            stream = self._stream
            assert stream is not None
            buffered = stream.buffered
            reader = ContentReader(self.blobs, stream.extents)
            out = bytearray(reader.read(offset, end - offset))
            pos = offset + len(out)
            if pos < end and pos < stream.pos:
                lo = pos - stream.emitted
                out += buffered[lo : lo + end - pos]
            return bytes(out) + bytes(end - offset - len(out))

    def allocated(self) -> int:
        with self._lock:
            if self._fd is not None:
                return os.fstat(self._fd).st_blocks * 512
            assert self._stream is not None
            return sum(n for i, n in self._stream.extents if i != HOLE) + len(self._stream.buffered)

    def fsync(self) -> None:
        with self._lock:
            if self._fd is not None:
                _check(os.fsync, self._fd)

    @property
    def light(self) -> bool:
        """Whether finishing needs neither disk nor much CPU: a small file streamed in order."""
        return self._stream is not None and self._stream.pending < IN_MEMORY

    def finish(self) -> Extents:
        """The content as a chunk list; call close() after."""
        with self._lock:
            if self._stream is not None:
                stream, self._stream = self._stream, None
                return stream.finish(self.size)
            assert self._fd is not None
            return chunk_fd(self._fd, self.size, self.blobs.put)

    def checkpoint(self) -> Extents:
        """The content as a chunk list, leaving the file open for more writes."""
        with self._lock:
            return chunk_fd(self._leave_stream(), self.size, self.blobs.put)

    def close(self) -> None:
        with self._lock:
            self._drop_file()

    def _drop_file(self) -> None:
        """Close and remove the spool file; the caller holds `_lock` (or owns the object alone)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.close(fd)
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
