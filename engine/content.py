"""A file's content: an ordered list of (chunk id, length), packed in one column.

Each extent is 36 bytes: the 32-byte chunk id and a u32 length. The id
`HOLE` marks a run of zeros that is stored as nothing (sparse files).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from typing import Protocol

from .ids import HOLE, ID_SIZE

_EXTENT = struct.Struct(f"<{ID_SIZE}sI")
EXTENT_SIZE = _EXTENT.size
# Holes longer than a u32 are split into several extents.
MAX_EXTENT = 0xFFFFFFFF


class ChunkSource(Protocol):
    """What reading content needs: the plaintext of a chunk by id."""

    def get(self, blob_id: bytes) -> bytes: ...


Extents = list[tuple[bytes, int]]


def pack_extents(extents: Extents) -> bytes:
    if len(extents) == 1:  # most files: without a generator, a third of the time
        return _EXTENT.pack(*extents[0])
    return b"".join(_EXTENT.pack(i, n) for i, n in extents)


def unpack_extents(data: bytes | None) -> Extents:
    if not data:
        return []
    return [(bytes(i), n) for i, n in _EXTENT.iter_unpack(data)]


def hole(length: int) -> Extents:
    out: Extents = []
    while length > 0:
        n = min(length, MAX_EXTENT)
        out.append((HOLE, n))
        length -= n
    return out


def total_length(extents: Extents) -> int:
    return sum(n for _, n in extents)


def chunk_ids(extents: Extents) -> Iterator[bytes]:
    for blob_id, _ in extents:
        if blob_id != HOLE:
            yield blob_id


def packed_ids(data: bytes | None) -> list[bytes]:
    """The chunk ids of packed extents, holes left out, read without unpacking the rest."""
    if not data:
        return []
    ids = [data[i : i + ID_SIZE] for i in range(0, len(data), EXTENT_SIZE)]
    return [i for i in ids if i != HOLE] if HOLE in data else ids


class ContentReader:
    """Reads byte ranges of one file's content. Immutable after creation."""

    def __init__(self, chunks: ChunkSource, extents: Extents):
        self.chunks = chunks
        self.extents = extents
        self._starts: list[int] = []
        pos = 0
        for _, n in extents:
            self._starts.append(pos)
            pos += n
        self.size = pos

    def read(self, offset: int, size: int) -> bytes:
        if offset >= self.size or size <= 0:
            return b""
        end = min(self.size, offset + size)
        i = bisect.bisect_right(self._starts, offset) - 1
        blob_id, n = self.extents[i]
        start = self._starts[i]
        if end <= start + n and blob_id != HOLE:  # within one chunk: one copy, or none for all of it
            chunk = self.chunks.get(blob_id)
            if offset == start and end == start + n:
                return chunk
            return bytes(memoryview(chunk)[offset - start : end - start])
        parts: list[bytes | memoryview] = []
        pos = offset
        while pos < end:
            blob_id, n = self.extents[i]
            start = self._starts[i]
            lo, hi = pos - start, min(n, end - start)
            parts.append(bytes(hi - lo) if blob_id == HOLE else memoryview(self.chunks.get(blob_id))[lo:hi])
            pos = start + hi
            i += 1
        return b"".join(parts)  # one copy: a read across chunks is 1 MiB with the mount's read-ahead

    def ahead(self, offset: int, count: int) -> list[bytes]:
        """Ids of the next `count` chunks from `offset` on: what a sequential reader needs next."""
        i = bisect.bisect_right(self._starts, offset) - 1
        return [blob_id for blob_id, _ in self.extents[max(i, 0) : i + count + 1] if blob_id != HOLE]

    def data_ranges(self) -> Iterator[tuple[int, Extents]]:
        """(offset, extents) of each run that is not a hole, for sparse restores."""
        run: Extents = []
        run_start = 0
        for (blob_id, n), start in zip(self.extents, self._starts, strict=True):
            if blob_id == HOLE:
                if run:
                    yield run_start, run
                run = []
            else:
                if not run:
                    run_start = start
                run.append((blob_id, n))
        if run:
            yield run_start, run
