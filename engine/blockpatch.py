"""Block patches: a changed disk image block stored as the 4 KiB pages in which it differs from a full block.

A patch is a blob of kind PATCH: `P`, the pages in a block (u16), the id of
its base, the id the patched block's bytes have, a bitmap of the pages that
differ, then those pages in order. The base is always a full block, never
another patch, so a read takes at most two blobs. The second id is the
block's identity: equal bytes have equal ids whether they are stored whole
or as a patch, and a read checks what it rebuilt against it. A block map
refers to a patch where it would refer to the block; garbage collection
keeps every live patch's base, which is why the format is defined here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import CorruptBlob
from .ids import HOLE, ID_SIZE, short

MAGIC = b"P"
# A file system writes 4 KiB pages: a scattered change dirties one page of a 64 KiB block.
PAGE = 4096
_HEAD = struct.Struct(f"<cH{ID_SIZE}s{ID_SIZE}s")


@dataclass(frozen=True)
class Patch:
    base: bytes  # the full block it patches
    block: bytes  # the id of the patched block's bytes
    pages: int  # pages in a block
    changed: list[int]  # the pages it replaces, in order
    body: bytes  # those pages


def make_patch(base_id: bytes, base: bytes, block_id: bytes, data: bytes) -> bytes | None:
    """A patch turning `base` into `data`; None unless some but at most half of the pages differ."""
    pages, rest = divmod(len(data), PAGE)
    if rest or len(base) != len(data) or pages >= 1 << 16:
        return None
    changed = [i for i in range(pages) if base[i * PAGE : (i + 1) * PAGE] != data[i * PAGE : (i + 1) * PAGE]]
    # More than half changed: the full block costs about as much and reads from one blob.
    if not changed or len(changed) * 2 > pages:
        return None
    bitmap = bytearray(-(-pages // 8))
    for i in changed:
        bitmap[i >> 3] |= 1 << (i & 7)
    head = _HEAD.pack(MAGIC, pages, base_id, block_id)
    return b"".join([head, bitmap, *(data[i * PAGE : (i + 1) * PAGE] for i in changed)])


def decode_patch(blob: bytes, patch_id: bytes = HOLE) -> Patch:
    if len(blob) < _HEAD.size or blob[:1] != MAGIC:
        raise CorruptBlob(f"block patch {short(patch_id)} does not parse", blob_id=patch_id)
    _, pages, base, block = _HEAD.unpack_from(blob)
    start = _HEAD.size + -(-pages // 8)
    bitmap = blob[_HEAD.size : start]
    changed = [i for i in range(pages) if bitmap[i >> 3] >> (i & 7) & 1]
    if len(blob) != start + len(changed) * PAGE or base == HOLE:
        raise CorruptBlob(f"block patch {short(patch_id)} does not parse", blob_id=patch_id)
    return Patch(base, block, pages, changed, blob[start:])


def apply_patch(patch: Patch, base: bytes) -> bytes:
    """The patched block's bytes: the base's pages with the patch's laid over them."""
    if len(base) != patch.pages * PAGE:
        raise CorruptBlob(f"the base of a block patch is {len(base)} bytes, not {patch.pages * PAGE}")
    out = bytearray(base)
    for n, i in enumerate(patch.changed):
        out[i * PAGE : (i + 1) * PAGE] = patch.body[n * PAGE : (n + 1) * PAGE]
    return bytes(out)
