"""Spool files: the bytes written to an open working-tree file.

Writes that arrive in order are chunked as they stream and need no disk at
all: the chunker holds at most 8 MiB, and finished chunks go to the blob
store. The first write that goes back, or a write into existing content,
moves the file to a spool file on local disk, and it is chunked from there
when it is released. Opening existing content for writing copies nothing
until a write needs it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

from ..blobstore import BlobStore
from ..cache import WouldBlock, check_may_block, memory_only
from ..content import ContentReader, Extents
from ..errors import CairnError, LostWrites, NoSpace
from ..ids import HOLE
from ..ingest import ChunkStream, chunk_fd

# Below this a streamed file is finished in memory: one small chunk to hash.
IN_MEMORY = 1 << 20
P = ParamSpec("P")
T = TypeVar("T")


class SpoolFile:
    """One open file's bytes. Thread-safe: `_lock` guards the stream, the base and the file.

    The working tree calls these outside its own lock, so a spool busy
    chunking or copying holds up only its own file. A caller in memory-only
    mode never waits for `_lock`: it gets WouldBlock and retries on a thread.
    """

    def __init__(self, path: Path, blobs: BlobStore, base: Extents, base_size: int):
        self.path = path
        self.blobs = blobs
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.size = base_size
        # `finishing` is set (by the working tree) before finish() runs, and
        # `done` once the tree has taken the result: writes wait for `done`.
        self.finishing = False
        self.done = threading.Event()
        # The content once finished: reads and checkpoints answer from it.
        self.finished: Extents | None = None
        # Why bytes written to this file were lost (a chunk of the stream or of
        # the finish could not be stored): from then on every write, checkpoint
        # and finish raises, and the file is lost for the tree.
        self.failure: BaseException | None = None
        # While not None, every write so far came in order: no spool file yet.
        self._stream: ChunkStream | None = None
        # Existing content, copied to the spool file by the first write that needs it.
        self._base: Extents | None = None
        self._allocated = 0
        # Chunks put for this file are referenced nowhere until the tree installs them.
        self.session = blobs.inflight.begin()
        if all(blob_id == HOLE for blob_id, _ in base):
            # Nothing but zeros so far (a new file, or one its writer sized first, as Samba does for
            # Windows clients that set the end of file before writing): writes in order stream.
            self._stream = ChunkStream(self.blobs.put)
        else:
            self._base = base
            self._allocated = sum(n for i, n in base if i != HOLE)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._lock.acquire(blocking=not memory_only.get()):
            raise WouldBlock  # another thread is busy with this file
        try:
            yield
        finally:
            self._lock.release()

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

    def _on_disk(self) -> int:
        """The spool file, created from the stream or the base on first need."""
        if self._stream is not None:
            self._to_disk(self._stream.extents, self._stream.buffered)
            self._stream = None  # only now: if the disk is full, the stream still holds everything
        elif self._base is not None:
            self._to_disk(self._base)
            self._base = None
        assert self._fd is not None
        return self._fd

    def _pwrite(self, data: bytes | memoryview, offset: int) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = _check(os.pwrite, self._fd, view, offset)
            view, offset = view[written:], offset + written

    def _count(self) -> None:
        """Refresh the allocated size that stat() reports without taking `_lock`."""
        if self._fd is not None:
            self._allocated = os.fstat(self._fd).st_blocks * 512
        elif self._stream is not None:
            self._allocated = self._stream.pos - self._stream.hole_bytes

    def write(self, offset: int, data: bytes) -> int:
        with self._locked():
            self._check_failure()
            if self._closed:
                raise CairnError("write to a released file")  # the tree waits for `done` first
            stream = self._stream
            # Buffering in the chunker is a copy: on the loop. Cutting and hashing chunks (once per
            # ~4 MiB) or going to disk hops to a thread; rsync -S writes 32 KiB at a time.
            if stream is None or offset < stream.pos or stream.costly(offset, len(data)):
                check_may_block()  # disk I/O, or chunks to cut and hash
            if stream is not None and offset >= stream.pos:
                try:
                    stream.skip_to(offset)
                    stream.write(data)
                except BaseException as e:  # a chunk cut from the stream was not stored: it is gone
                    self.failure = e
                    raise
            else:
                self._on_disk()
                self._pwrite(data, offset)
            self.size = max(self.size, offset + len(data))
            self._count()
            return self.size

    def truncate(self, size: int) -> bool:
        """False if the spool was finished meanwhile: truncate the tree's content instead."""
        with self._locked():
            self._check_failure()
            if self._closed:
                return False
            if self._stream is None or size < self._stream.pos:
                check_may_block()
                _check(os.ftruncate, self._on_disk(), size)
            self.size = size
            self._count()
            return True

    def _check_failure(self) -> None:
        if self.failure is not None:
            raise LostWrites(f"earlier writes to this file were lost: {self.failure}", cause=self.failure)

    @property
    def _closed(self) -> bool:
        """Finished (the content is `finished`) or closed: no more changes."""
        return self.finished is not None or (self._fd is None and self._stream is None and self._base is None)

    def read(self, offset: int, size: int) -> bytes:
        check_may_block()
        with self._locked():
            end = min(offset + size, self.size)
            if offset >= end:
                return b""
            if self._closed:
                return ContentReader(self.blobs, self.finished or []).read(offset, end - offset)
            if self._fd is not None:
                return os.pread(self._fd, end - offset, offset)
            if self._base is not None:
                return ContentReader(self.blobs, self._base).read(offset, end - offset)
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
        return self._allocated

    def fsync(self) -> None:
        with self._locked():
            if self._fd is not None:
                _check(os.fsync, self._fd)

    @property
    def busy(self) -> bool:
        """Whether another thread works on this file right now."""
        return self._lock.locked()

    @property
    def light(self) -> bool:
        """Whether finishing needs neither disk nor much CPU: a small file streamed in order."""
        stream = self._stream
        return stream is not None and stream.pending < IN_MEMORY

    def finish(self) -> Extents:
        """The content as a chunk list; call close() after.

        If a chunk cannot be stored (now or by an earlier write), the bytes are
        lost: `failure` says why, `finished` stays None, and this raises.
        """
        with self._locked():
            try:
                self._check_failure()
                if self._stream is not None:
                    self.finished = self._stream.finish(self.size)
                elif self._base is not None:
                    self.finished = self._base  # opened for writing, never written
                else:
                    assert self._fd is not None
                    self.finished = chunk_fd(self._fd, self.size, self.blobs.put)
            except BaseException as e:
                self.failure = self.failure or e
                raise
            finally:
                self._stream = self._base = None
            return self.finished

    def checkpoint(self) -> Extents:
        """The content as a chunk list, leaving the file open for more writes."""
        with self._locked():
            self._check_failure()
            if self._closed:
                if self.finished is None:
                    raise LostWrites("the file was closed before its writes were stored")
                return self.finished  # finished meanwhile
            if self._base is not None:
                return self._base
            return chunk_fd(self._on_disk(), self.size, self.blobs.put)

    def close(self) -> None:
        with self._lock:
            self._drop_file()
            self._stream = self._base = None

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
