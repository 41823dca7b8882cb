"""Reading and writing a disk image block by block.

A version (`VersionReader`) reads a frozen block map. A `Disk` is the
writable image of a source: writes that cover a whole block store it at
once; partial writes patch a copy of the block (read-modify-write) kept
until it is full, evicted, or committed. Every stored block is exactly
`block_size` bytes: the tail of the last block past the image's size is
zeros, so growing the image again reads zeros there.

A changed block that differs from the block it replaces in at most half of
its 4 KiB pages is stored as a patch of that block (engine/blockpatch.py),
or of that block's base if it is a patch itself. A map entry names a full
block or a patch; a stored full block is exactly `block_size` bytes and a
patch is shorter, which is how a read tells them apart.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Protocol

from engine.blockpatch import PAGE, apply_patch, decode_patch, make_patch
from engine.cache import WouldBlock, check_may_block
from engine.errors import CorruptBlob, InvalidArgument, NoSpace
from engine.ids import HOLE, IdKey, short
from engine.packs import DATA, PATCH

from .blockmap import Blobs, BlockMap

# Partially written blocks kept in memory before the oldest are stored: 16 MiB of 64 KiB blocks.
DIRTY_MAX = 256
READ_AHEAD = 32  # blocks fetched ahead of a sequential reader: 2 MiB, one pack range or two
# 64 TiB, what three levels of 1,024-id nodes address at 64 KiB blocks; ext4 stops at 16 TiB files.
MAX_SIZE = 64 << 40
# Patches whose base and block id a disk remembers: 64 Ki entries, about 12 MiB.
PATCHES_KEPT = 1 << 16


class Store(Blobs, Protocol):
    """The blob store as a disk uses it."""

    id_key: IdKey

    def prefetch(self, blob_ids: list[bytes], parsed: Callable[[bytes, bytes], object] | None = None) -> None: ...

    def is_stored(self, blob_id: bytes) -> bool: ...

    def hold(self, blob_id: bytes) -> bool: ...

    def put(self, data: bytes, kind: int = ..., blob_id: bytes | None = None) -> bytes: ...


class VersionReader:
    """A block map at random offsets. Thread-safe: `_lock` guards the map's node cache and `_bases`."""

    def __init__(self, blobs: Store, root: bytes, size: int, block_size: int):
        self.blobs = blobs
        self.size = size
        self.block_size = block_size
        self._zero = bytes(block_size)
        self._lock = threading.Lock()
        self.map = BlockMap(blobs, root, -(-size // block_size))
        self._bases: list[bytes] = []  # of patches read ahead, to read ahead next

    def _block_id(self, block: int) -> bytes:
        with self._lock:
            return self.map.get(block)

    def _block(self, block: int) -> bytes:
        block_id = self._block_id(block)
        return self._zero if block_id == HOLE else self._stored(block_id)

    def _stored(self, block_id: bytes) -> bytes:
        """A stored block's bytes: a full block as it is, a patch laid over its base."""
        data = self.blobs.get(block_id)
        if len(data) == self.block_size:
            return data
        patch = decode_patch(data, block_id)
        full = apply_patch(patch, self.blobs.get(patch.base))
        if self.blobs.id_key.id_of(full) != patch.block:
            raise CorruptBlob(f"block patch {short(block_id)} does not rebuild its block", blob_id=block_id)
        return full

    def read(self, offset: int, size: int) -> bytes:
        """Bytes at an offset; short at the end of the image, as a file read is."""
        if offset < 0 or size < 0:
            raise InvalidArgument("negative offset or size")
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        bs = self.block_size
        first, last = offset // bs, (end - 1) // bs
        if last - first >= 1 or (offset % bs) + size >= bs:
            self._read_ahead(last + 1)
        parts = [self._block(b) for b in range(first, last + 1)]
        data = b"".join(parts) if len(parts) > 1 else parts[0]
        start = offset - first * bs
        return bytes(memoryview(data)[start : start + end - offset])

    def _read_ahead(self, block: int) -> None:
        stop = min(block + READ_AHEAD, -(-self.size // self.block_size))
        with self._lock:
            ids = [self.map.get(b) for b in range(block, stop)]
        ids = [i for i in ids if i != HOLE]
        with self._lock:
            bases, self._bases = self._bases, []
        if bases:  # of patches read ahead before: one batch, a pack range or two
            self.blobs.prefetch(bases)
        if ids:
            self.blobs.prefetch(ids, self._prefetched)

    def _prefetched(self, blob_id: bytes, data: bytes) -> None:
        """A patch read ahead: the next read ahead reads its base."""
        if len(data) != self.block_size:
            with contextlib.suppress(CorruptBlob), self._lock:  # the read itself reports it
                self._bases.append(decode_patch(data, blob_id).base)

    def stored_blocks(self) -> int:
        """Blocks that are not holes (reads the whole map)."""
        with self._lock:
            return sum(self.map.get(b) != HOLE for b in range(self.map.blocks))


class Disk(VersionReader):
    """A writable image. Thread-safe: `_lock` guards the map, the size, `_partial` and `_patches`."""

    def __init__(self, blobs: Store, root: bytes, size: int, block_size: int):
        super().__init__(blobs, root, size, block_size)
        self._partial: dict[int, bytearray] = {}  # partially written blocks, oldest first
        self._patches: dict[bytes, tuple[bytes, bytes]] = {}  # patch id -> (its base, its block's id)
        self.changed = False  # since the last commit

    def _block(self, block: int) -> bytes:
        with self._lock:
            partial = self._partial.get(block)
            if partial is not None:
                return bytes(partial)
        return super()._block(block)

    def write(self, offset: int, data: bytes) -> int:
        """Write at any offset; past the end the image grows, as a file does."""
        end = offset + len(data)
        if offset < 0:
            raise InvalidArgument("negative offset")
        if end > MAX_SIZE:
            raise NoSpace(f"an image holds at most {MAX_SIZE >> 40} TiB")
        bs = self.block_size
        view = memoryview(data)
        pos = offset
        while pos < end:
            block, start = divmod(pos, bs)
            n = min(bs - start, end - pos)
            piece = view[pos - offset : pos - offset + n]
            if n == bs:
                self._store(block, bytes(piece), grow_to=end)
            else:
                self._patch(block, start, piece, grow_to=end)
            pos += n
        return len(data)

    def block_id(self, block: int) -> bytes:
        with self._lock:
            if block in self._partial:
                return b""  # matches no id: its content is not stored yet
            return self.map.get(block)

    def holds(self, block: int, block_id: bytes) -> bool:
        """Whether a block's bytes have this id: its entry is the id, or a patch of such bytes."""
        entry = self.block_id(block)
        if entry == block_id:
            return True
        return entry not in (HOLE, b"") and self._origin(entry)[1] == block_id

    def _origin(self, entry: bytes) -> tuple[bytes, bytes]:
        """(base, id of its bytes) of a stored block; a full block is its own base."""
        with self._lock:
            known = self._patches.get(entry)
        if known is not None:
            return known
        data = self.blobs.get(entry)
        if len(data) == self.block_size:
            return entry, entry
        patch = decode_patch(data, entry)
        self._remember(entry, patch.base, patch.block)
        return patch.base, patch.block

    def _remember(self, patch_id: bytes, base: bytes, block_id: bytes) -> None:
        with self._lock:
            if len(self._patches) >= PATCHES_KEPT:
                self._patches.clear()
            self._patches[patch_id] = (base, block_id)

    def stored_in(self, first: int, stop: int) -> list[int]:
        with self._lock:
            return sorted(set(self.map.stored(first, stop)) | {b for b in self._partial if first <= b < stop})

    def store_block(self, block: int, data: bytes, block_id: bytes | None = None) -> None:
        """Replace a whole block inside the image (the last one zero-padded past the end).

        `block_id` is the id of `data` if the caller has it already (push hashes every block to compare).
        """
        if len(data) != self.block_size or block * self.block_size >= self.size:
            raise InvalidArgument(f"block {block} is not a whole block inside the image")
        self._store(block, data, grow_to=self.size, block_id=block_id)

    def _grow_locked(self, end: int) -> None:
        if end > self.size:
            self.size = end
            self.map.resize(-(-end // self.block_size))

    def _store(self, block: int, data: bytes, grow_to: int, block_id: bytes | None = None) -> None:
        block_id = self._put_block(block, data, defer=True, block_id=block_id)
        with self._lock:
            self._grow_locked(grow_to)
            self._partial.pop(block, None)
            self.map.set(block, block_id)
            self.changed = True

    def _patch(self, block: int, start: int, piece: memoryview, grow_to: int) -> None:
        while True:
            with self._lock:
                partial = self._partial.get(block)
                if partial is not None:
                    partial[start : start + len(piece)] = piece
                    self._grow_locked(grow_to)
                    self.changed = True
                    return
                block_id = self.map.get(block)
            # Read the old block outside the lock; start over if a writer got there first.
            if block_id != HOLE:
                check_may_block()
            old = self._zero if block_id == HOLE else self._stored(block_id)
            with self._lock:
                if block not in self._partial and self.map.get(block) == block_id:
                    self._partial[block] = bytearray(old)
                    spill = self._take_oldest() if len(self._partial) > DIRTY_MAX else []
                else:
                    spill = []
            self._put_blocks(spill)

    def _take_oldest(self) -> list[tuple[int, bytes]]:
        taken = []
        for block in list(self._partial)[: DIRTY_MAX // 2]:
            taken.append((block, bytes(self._partial[block])))
        return taken

    def _put_blocks(self, blocks: list[tuple[int, bytes]]) -> None:
        """Store copies of partial blocks, unless they were written again meanwhile."""
        for block, data in blocks:
            block_id = self._put_block(block, data, defer=False)
            with self._lock:
                partial = self._partial.get(block)
                if partial is not None and partial == data:
                    del self._partial[block]
                    if block < self.map.blocks:
                        self.map.set(block, block_id)

    def _put_block(self, block: int, data: bytes, defer: bool, block_id: bytes | None = None) -> bytes:
        """Store a block's new bytes; returns what its map entry becomes: HOLE, a block's id or a patch's.

        The base of a patch is read from the pool; where that would block a
        caller that must not (the FUSE loop), `defer` raises WouldBlock to
        have the write retried on a thread, else the block is stored whole.
        """
        if data == self._zero:
            return HOLE
        with self._lock:
            old = self.map.get(block)
        if old == HOLE or self.block_size < 2 * PAGE:  # a 4 KiB block has no pages to keep
            return self.blobs.put(data, DATA, block_id)
        block_id = block_id or self.blobs.id_key.id_of(data)
        if block_id == old and self.blobs.hold(old):
            return old  # unchanged (`dd` of a whole image over the last one)
        if self.blobs.is_stored(block_id):
            return self.blobs.put(data, DATA, block_id)  # stored already: a dedup hit
        try:
            base_id, old_id = self._origin(old)
            base = None if old_id == block_id else self.blobs.get(base_id)
        except WouldBlock:
            if defer:
                raise
            return self.blobs.put(data, DATA, block_id)
        if base is None and self.blobs.hold(old):
            return old  # a patch of these very bytes
        patch = None if base is None else make_patch(base_id, base, block_id, data)
        if patch is None or not self.blobs.hold(base_id):
            return self.blobs.put(data, DATA, block_id)
        patch_id = self.blobs.put(patch, PATCH)
        self._remember(patch_id, base_id, block_id)
        return patch_id

    def truncate(self, size: int) -> None:
        """Set the size; a shrunk image's last block is zeroed past the end, blocks past it dropped."""
        if size < 0 or size > MAX_SIZE:
            raise InvalidArgument(f"an image's size is 0 to {MAX_SIZE >> 40} TiB")
        bs = self.block_size
        if size < self.size and size % bs:
            tail = bs - size % bs
            self.write(size, bytes(min(tail, self.size - size)))  # zero the rest of the last block
        with self._lock:
            blocks = -(-size // bs)
            for block in [b for b in self._partial if b >= blocks]:
                del self._partial[block]
            self.size = size
            self.map.resize(blocks)
            self.changed = True

    def commit_map(self) -> tuple[bytes, int]:
        """Store partial blocks and changed map nodes; returns (root, size) to record in the catalog."""
        with self._lock:
            pending = [(b, bytes(d)) for b, d in self._partial.items()]
        self._put_blocks(pending)
        with self._lock:
            root = self.map.commit()
            self.changed = bool(self._partial)  # written again meanwhile
            return root, self.size
