"""Packs: many blobs in one storage object, sealed at about 16 MiB.

Layout: blobs back to back, then the pack index (itself a blob, so it is
compressed and later encrypted like any other), then a footer: the index
blob's length (u32) and the magic `CAIRNPK1`. A pack describes itself, so
`catalog rebuild` can recover the blob index from the pool alone. A pack is
named by the BLAKE3 of its bytes and stored at `packs/ab/cd/abcd…`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import blake3

from .codec import Codec
from .errors import CorruptBlob
from .ids import ID_SIZE

# 16 MiB: about 64 objects per GiB, which keeps S3 request costs low while a
# pack still uploads in well under a second on a LAN.
PACK_TARGET = 16 << 20
FOOTER = struct.Struct("<I8s")
FOOTER_MAGIC = b"CAIRNPK1"
_ENTRY = struct.Struct(f"<{ID_SIZE}sBQII")

DATA = 0
TREE = 1
MAP = 2  # a block map node of a disk image
PATCH = 3  # a disk image block stored as the pages that differ from a full block (blockpatch.py)


class PackEntry(NamedTuple):
    """A NamedTuple, not a frozen dataclass: a first backup makes one per small file, at a third of the cost."""

    blob_id: bytes
    kind: int
    offset: int
    length: int
    raw_length: int


def pack_key(name: str) -> str:
    return f"packs/{name[:2]}/{name[2:4]}/{name}"


class PackBuilder:
    """Accumulates encoded blobs. Not thread-safe: the blob store locks around it."""

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self.entries: list[PackEntry] = []
        self.size = 0

    def add(self, blob_id: bytes, kind: int, blob: tuple[bytes, bytes | memoryview], raw_length: int) -> PackEntry:
        """Append a blob given as (header, body)."""
        length = len(blob[0]) + len(blob[1])
        entry = PackEntry(blob_id, kind, self.size, length, raw_length)
        self.parts += blob
        self.entries.append(entry)
        self.size += length
        return entry

    def seal(self, codec: Codec) -> tuple[str, bytes]:
        """The pack's name and bytes."""
        index = b"".join(_ENTRY.pack(e.blob_id, e.kind, e.offset, e.length, e.raw_length) for e in self.entries)
        index_blob = codec.encode(index)
        data = b"".join([*self.parts, index_blob, FOOTER.pack(len(index_blob), FOOTER_MAGIC)])
        return blake3.blake3(data).hexdigest(), data


def read_index(codec: Codec, tail: bytes, pack_size: int) -> list[PackEntry]:
    """Parse a pack's index from its last bytes (`tail`, the whole pack or its end)."""
    if len(tail) < FOOTER.size:
        raise CorruptBlob("pack too short for its footer")
    index_len, magic = FOOTER.unpack_from(tail, len(tail) - FOOTER.size)
    if magic != FOOTER_MAGIC:
        raise CorruptBlob("pack footer has a wrong magic")
    start = len(tail) - FOOTER.size - index_len
    if start < 0:
        raise CorruptBlob("pack index is longer than the bytes given", pack=None)
    raw = codec.decode(tail[start : len(tail) - FOOTER.size])
    if len(raw) % _ENTRY.size:
        raise CorruptBlob("pack index has a partial entry")
    entries = [PackEntry(*_ENTRY.unpack_from(raw, i)) for i in range(0, len(raw), _ENTRY.size)]
    data_end = pack_size - FOOTER.size - index_len
    for e in entries:
        if e.offset + e.length > data_end:
            raise CorruptBlob("pack index points past the pack's data")
    return entries


def index_length(tail: bytes) -> int:
    """How many bytes at the end of a pack hold index and footer."""
    index_len, magic = FOOTER.unpack_from(tail, len(tail) - FOOTER.size)
    if magic != FOOTER_MAGIC:
        raise CorruptBlob("pack footer has a wrong magic")
    return int(index_len) + FOOTER.size
