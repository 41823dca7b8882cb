"""Content-defined chunking with FastCDC: min 256 KiB, average 1 MiB, max 4 MiB."""

from __future__ import annotations

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


def cut(buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    """Split a buffer into chunks; the views point into `buf`."""
    view = memoryview(buf)
    if len(view) <= SMALL_FILE:
        if len(view):
            yield view
        return
    for chunk in _cdc().cut_buf(view):
        yield view[chunk.offset : chunk.offset + chunk.length]


class StreamChunker:
    """Chunks bytes that arrive in order, emitting chunks as soon as they are final.

    Not thread-safe: one writer feeds one chunker.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        self._buf += data
        if len(self._buf) < 2 * MAX_SIZE:
            return []
        # Every cut before the last one is final: a cut point depends only on
        # the bytes since the previous one, so later bytes cannot move it.
        whole = bytes(self._buf)
        chunks = [bytes(c) for c in cut(whole)]
        tail = chunks.pop()
        self._buf = bytearray(tail)
        return chunks

    def finish(self) -> list[bytes]:
        chunks = [bytes(c) for c in cut(self._buf)]
        self._buf = bytearray()
        return chunks

    @property
    def buffer(self) -> bytearray:
        return self._buf

    @property
    def pending(self) -> int:
        return len(self._buf)
