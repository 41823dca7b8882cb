"""Content-defined chunking with FastCDC: min 256 KiB, average 1 MiB, max 4 MiB."""

from __future__ import annotations

import os
from collections.abc import Iterator

from pyfastcdc import FastCDC

MIN_SIZE = 256 << 10
MAX_SIZE = 4 << 20
# FastCDC's cut-point skipping adds min_size to the mask's average: a mask
# for 768 KiB gives chunks of about 1 MiB (1.1 MiB measured on mixed data).
MASK_AVERAGE = 768 << 10
# Files below this are one chunk: a cut point could not be placed anyway.
SMALL_FILE = MIN_SIZE


def _cdc() -> FastCDC:
    return FastCDC(MASK_AVERAGE, min_size=MIN_SIZE, max_size=MAX_SIZE)


def spans(buf: bytes | bytearray | memoryview) -> list[tuple[int, int]]:
    """(offset, length) of each chunk of a buffer."""
    n = len(buf)
    if n <= SMALL_FILE:
        return [(0, n)] if n else []
    return [(c.offset, c.length) for c in _cdc().cut_buf(buf)]


def cut(buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    """Split a buffer into chunks; the views point into `buf`."""
    view = memoryview(buf)
    for offset, length in spans(view):
        yield view[offset : offset + length]


class StreamChunker:
    """Chunks bytes that arrive in order, emitting chunks as soon as they are final.

    The buffer grows to 12 MiB and is then reused: a fresh 8 MiB buffer per
    feed cost more system time (page faults) than chunking itself, and a
    12 MiB one per small file cost more than the file.
    Not thread-safe: one writer feeds one chunker.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._len = 0

    def _room(self, want: int) -> int:
        """Grow the buffer for `want` more bytes, up to its cap; returns the room there is."""
        need = self._len + want
        if need > len(self._buf) and len(self._buf) < 3 * MAX_SIZE:
            self._buf.extend(bytes(min(3 * MAX_SIZE, max(need, 2 * len(self._buf))) - len(self._buf)))
        return len(self._buf) - self._len

    def cuts(self, more: int) -> bool:
        """Whether feeding `more` bytes cuts chunks (hashing them): below that, a feed is a copy into memory."""
        return self._len + more >= 2 * MAX_SIZE

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        view = memoryview(data)
        chunks: list[bytes] = []
        while view:
            n = min(len(view), self._room(len(view)))
            self._buf[self._len : self._len + n] = view[:n]
            self._len += n
            view = view[n:]
            if self._len >= 2 * MAX_SIZE:
                chunks += self._cut(final=False)
        return chunks

    def readinto(self, fd: int, offset: int, size: int) -> tuple[int, list[bytes]]:
        """Read up to `size` bytes of a file straight into the buffer."""
        if self._len >= 2 * MAX_SIZE:
            return 0, self._cut(final=False)
        n = min(size, self._room(size))
        with memoryview(self._buf) as view:
            got = os.preadv(fd, [view[self._len : self._len + n]], offset)
        self._len += got
        return got, self._cut(final=False) if self._len >= 2 * MAX_SIZE else []

    def _cut(self, final: bool) -> list[bytes]:
        # Every cut before the last one is final: a cut point depends only on
        # the bytes since the previous one, so later bytes cannot move it.
        with memoryview(self._buf) as view:
            cuts = spans(view[: self._len])
            if not final:
                cuts.pop()
            chunks = [bytes(view[o : o + n]) for o, n in cuts]
        used = sum(n for _, n in cuts)
        self._buf[: self._len - used] = self._buf[used : self._len]
        self._len -= used
        return chunks

    def finish(self) -> list[bytes]:
        return self._cut(final=True) if self._len else []

    @property
    def buffer(self) -> bytes:
        return bytes(self._buf[: self._len])

    @property
    def pending(self) -> int:
        return self._len
