"""The mutable block map of one disk image: block number -> block id, stored as a radix tree of nodes.

Nodes are read from the pool as they are needed and kept as 32 KiB
bytearrays; `commit` stores only the nodes that changed since the last
commit (and their ancestors), so a version adds map data in proportion to
the blocks it changed. Node format and FANOUT: engine/blockmap.py.
"""

from __future__ import annotations

from typing import Protocol

from engine.blockmap import FANOUT, decode_node, depth_for, encode_node
from engine.errors import CorruptBlob
from engine.ids import HOLE, ID_SIZE, short
from engine.packs import MAP

NODE_BYTES = FANOUT * ID_SIZE
# Nodes kept in memory before clean ones are dropped: 32 MiB, the map of 64 GiB of 64 KiB blocks.
MAX_NODES = 1024
_EMPTY = bytes(NODE_BYTES)


class Blobs(Protocol):
    """What a block map needs of the blob store."""

    def get(self, blob_id: bytes) -> bytes: ...

    def put(self, data: bytes, kind: int = ...) -> bytes: ...


class BlockMap:
    """Not thread-safe: the disk that owns it holds its lock around every call."""

    def __init__(self, blobs: Blobs, root: bytes, blocks: int):
        self.blobs = blobs
        self.blocks = blocks
        self.depth = depth_for(blocks)
        self.root = root  # as last committed
        self._nodes: dict[tuple[int, int], bytearray] = {}  # (level, index) -> ids
        self._dirty: set[tuple[int, int]] = set()

    def _node(self, level: int, index: int, create: bool = True) -> bytearray | None:
        """A node, read from the pool on first use; a hole is None unless `create`."""
        key = (level, index)
        node = self._nodes.get(key)
        if node is not None:
            return node
        if level == self.depth - 1:
            node_id = self.root
        else:
            parent = self._node(level + 1, index // FANOUT, create)
            if parent is None:
                return None
            slot = (index % FANOUT) * ID_SIZE
            node_id = bytes(parent[slot : slot + ID_SIZE])
        if node_id == HOLE and not create:
            return None  # reading a hole: nothing to keep in memory
        if len(self._nodes) >= MAX_NODES:
            self._evict()
        node = bytearray(NODE_BYTES)
        if node_id != HOLE:
            got_level, ids = decode_node(self.blobs.get(node_id), node_id)
            if got_level != level:
                raise CorruptBlob(f"block map node {short(node_id)} is at level {got_level}, not {level}")
            packed = b"".join(ids)
            node[: len(packed)] = packed
        self._nodes[key] = node
        return node

    def _evict(self) -> None:
        """Drop the clean nodes: their parents hold their stored ids (a changed node's ancestors are changed too)."""
        self._nodes = {k: v for k, v in self._nodes.items() if k in self._dirty}

    def get(self, block: int) -> bytes:
        """The id of a block (HOLE for zeros); blocks past the end are holes."""
        if block >= self.blocks:
            return HOLE
        leaf, slot = divmod(block, FANOUT)
        node = self._node(0, leaf, create=False)
        if node is None:
            return HOLE
        return bytes(node[slot * ID_SIZE : (slot + 1) * ID_SIZE])

    def stored(self, first: int, stop: int) -> list[int]:
        """The blocks in [first, stop) that are not holes; hole subtrees are skipped whole."""
        found = []
        stop = min(stop, self.blocks)
        for leaf in range(first // FANOUT, -(-stop // FANOUT)):
            node = self._node(0, leaf, create=False)
            if node is None:
                continue
            lo, hi = max(first, leaf * FANOUT), min(stop, (leaf + 1) * FANOUT)
            for block in range(lo, hi):
                slot = (block - leaf * FANOUT) * ID_SIZE
                if node[slot : slot + ID_SIZE] != HOLE:
                    found.append(block)
        return found

    def set(self, block: int, block_id: bytes) -> None:
        if block >= self.blocks:
            raise IndexError(f"block {block} past the map's {self.blocks} blocks")
        leaf, slot = divmod(block, FANOUT)
        node = self._node(0, leaf)
        assert node is not None
        if node[slot * ID_SIZE : (slot + 1) * ID_SIZE] == block_id:
            return
        node[slot * ID_SIZE : (slot + 1) * ID_SIZE] = block_id
        self._mark_up(0, leaf)

    def resize(self, blocks: int) -> None:
        """Grow (new blocks are holes) or shrink (blocks past the end are dropped)."""
        if blocks < self.blocks:
            self._cut(blocks)
        self.blocks = blocks
        depth = depth_for(blocks)
        while self.depth < depth:  # the old root becomes the first child of a new one
            self._grow()
        while self.depth > depth:
            self._shrink()

    def _cut(self, blocks: int) -> None:
        if blocks == 0:
            self.root = HOLE
            self._nodes.clear()
            self._dirty.clear()
            return
        first = blocks  # the first entry to drop, at each level
        for level in range(self.depth):
            index, slot = divmod(first, FANOUT)
            if slot and index * FANOUT < _span(self.blocks, level):
                node = self._node(level, index)
                assert node is not None
                node[slot * ID_SIZE :] = bytes(NODE_BYTES - slot * ID_SIZE)
                self._mark_up(level, index)
            for key in [k for k in self._nodes if k[0] == level and k[1] >= -(-first // FANOUT)]:
                del self._nodes[key]  # wholly past the end
                self._dirty.discard(key)
            first = -(-first // FANOUT)  # nodes of this level still in use

    def _mark_up(self, level: int, index: int) -> None:
        for lv in range(level, self.depth):
            self._dirty.add((lv, index))
            index //= FANOUT

    def _grow(self) -> None:
        old_top = (self.depth - 1, 0)
        self.depth += 1
        new = bytearray(NODE_BYTES)
        if old_top in self._nodes:
            self._dirty.add(old_top)  # stored again at commit, into the new root
        else:
            new[:ID_SIZE] = self.root  # the old root, unchanged, is the first child
        self._nodes[(self.depth - 1, 0)] = new
        self.root = HOLE
        self._dirty.add((self.depth - 1, 0))

    def _shrink(self) -> None:
        top = self._node(self.depth - 1, 0)
        assert top is not None
        child = bytes(top[:ID_SIZE])
        del self._nodes[(self.depth - 1, 0)]
        self._dirty.discard((self.depth - 1, 0))
        self.depth -= 1
        if (self.depth - 1, 0) not in self._nodes:
            self.root = child
        else:
            self._dirty.add((self.depth - 1, 0))

    def commit(self) -> bytes:
        """Store the changed nodes; returns the new root id. Clean nodes are dropped from memory."""
        for level in range(self.depth):
            for key in sorted(k for k in self._dirty if k[0] == level):
                node = self._node(*key)  # a parent marked changed may have been dropped while clean
                assert node is not None
                node_id = HOLE if node == _EMPTY else self.blobs.put(encode_node(level, _ids(node)), MAP)
                if level == self.depth - 1:
                    self.root = node_id
                else:
                    parent = self._node(level + 1, key[1] // FANOUT)
                    assert parent is not None
                    slot = (key[1] % FANOUT) * ID_SIZE
                    parent[slot : slot + ID_SIZE] = node_id
        self._dirty.clear()
        self._nodes.clear()  # stored: read again on demand
        return self.root

    @property
    def changed(self) -> bool:
        return bool(self._dirty)


def _span(blocks: int, level: int) -> int:
    """Entries in use at a level: blocks at level 0, nodes below at higher levels."""
    for _ in range(level):
        blocks = -(-blocks // FANOUT)
    return blocks


def _ids(node: bytearray) -> list[bytes]:
    return [bytes(node[i : i + ID_SIZE]) for i in range(0, NODE_BYTES, ID_SIZE)]
