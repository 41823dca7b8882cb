"""Turning bytes into chunk lists: streamed writes and whole files with holes."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator

from .chunker import SMALL_FILE, StreamChunker
from .content import Extents, hole

# Gaps of zeros at least this long become holes; shorter ones are stored as
# zeros inside a chunk, where zstd shrinks them to nearly nothing and the
# chunk list stays short.
HOLE_MIN = 1 << 20
READ_SIZE = 8 << 20

Put = Callable[[bytes], bytes]


class ChunkStream:
    """Chunks bytes that arrive in order, with gaps as holes. Not thread-safe."""

    def __init__(self, put: Put):
        self.put = put
        self.extents: Extents = []
        self.pos = 0
        self.hole_bytes = 0
        self._chunker = StreamChunker()

    def write(self, data: bytes | memoryview) -> None:
        self._emit(self._chunker.feed(data))
        self.pos += len(data)

    def read_from(self, fd: int, offset: int, size: int) -> int:
        """Feed up to `size` bytes of a file at `offset`; returns how many were read."""
        got, chunks = self._chunker.readinto(fd, offset, size)
        self._emit(chunks)
        self.pos += got
        return got

    def costly(self, offset: int, size: int) -> bool:
        """Whether writing `size` bytes at `offset` (>= pos) cuts or stores chunks, rather than only buffering them."""
        gap = max(0, offset - self.pos)
        if gap >= HOLE_MIN:
            return self._chunker.pending > 0  # the bytes before the hole are cut now
        return self._chunker.cuts(gap + size)

    def skip_to(self, offset: int) -> None:
        """Zeros up to `offset`: a hole if long, else zero bytes in a chunk."""
        gap = offset - self.pos
        if gap <= 0:
            return
        if gap < HOLE_MIN:
            self.write(bytes(gap))
            return
        self._emit(self._chunker.finish())
        self.extents += hole(gap)
        self.hole_bytes += gap
        self.pos = offset

    @property
    def buffered(self) -> bytes:
        """Bytes fed but not yet cut into chunks; they start at `emitted`."""
        return bytes(self._chunker.buffer)

    @property
    def pending(self) -> int:
        return self._chunker.pending

    @property
    def emitted(self) -> int:
        return self.pos - self._chunker.pending

    def finish(self, size: int | None = None) -> Extents:
        if size is not None:
            self.skip_to(size)
        self._emit(self._chunker.finish())
        return self.extents

    def _emit(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.extents.append((self.put(chunk), len(chunk)))


def data_regions(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the regions of a file that hold data, by SEEK_DATA/SEEK_HOLE."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole from here on
                return
            if e.errno == errno.EINVAL:  # no hole support: all data
                yield pos, size
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if start >= size:
            return
        yield start, end
        pos = end


def _more(fd: int, pos: int) -> bool:
    return os.fstat(fd).st_size > pos


def chunk_fd(fd: int, size: int, put: Put) -> Extents:
    """Chunk a whole file, keeping its holes."""
    if 0 < size <= SMALL_FILE:  # most files: one read, one chunk
        data = os.pread(fd, size, 0)
        return [(put(data), len(data))] if len(data) == size else chunk_fd(fd, len(data), put)
    stream = ChunkStream(put)
    for start, end in data_regions(fd, size):
        stream.skip_to(start)
        pos = start
        while pos < end:
            got = stream.read_from(fd, pos, min(READ_SIZE, end - pos))
            if got == 0 and stream.pos == pos and not _more(fd, pos):
                break  # the file shrank under us
            pos += got
    return stream.finish(size)
