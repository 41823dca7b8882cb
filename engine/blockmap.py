"""Block map nodes: how a disk image version's block map is stored in the pool.

A block map is a radix tree of nodes; a node is a blob: `M`, its level, then
up to FANOUT 32-byte ids. A level-0 node lists block ids, a higher one lists
child node ids; HOLE stands for an all-zero block or subtree, and a node's
missing tail is holes. Only the nodes on the path to a changed block are
written again, so a version that changed few blocks shares almost all of its
map with the last one. A block id may name a patch (blockpatch.py). The
mutable map lives in image/; garbage collection only needs to walk stored
maps, which is why the format is defined here.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable

from .blockpatch import decode_patch
from .errors import CorruptBlob
from .ids import HOLE, ID_SIZE, short

MAGIC = b"M"
# 1,024 ids: a 32 KiB node. A leaf covers 64 MiB of 64 KiB blocks, two levels
# 64 GiB, three 64 TiB; a one-block change rewrites one node per level.
FANOUT = 1024


def encode_node(level: int, ids: list[bytes]) -> bytes:
    end = len(ids)
    while end and ids[end - 1] == HOLE:
        end -= 1  # trailing holes cost nothing
    return MAGIC + bytes([level]) + b"".join(ids[:end])


def decode_node(blob: bytes, node_id: bytes = HOLE) -> tuple[int, list[bytes]]:
    body = len(blob) - 2
    if blob[:1] != MAGIC or body < 0 or body % ID_SIZE or body // ID_SIZE > FANOUT:
        raise CorruptBlob(f"block map node {short(node_id)} does not parse", blob_id=node_id)
    return blob[1], [blob[i : i + ID_SIZE] for i in range(2, len(blob), ID_SIZE)]


def depth_for(blocks: int) -> int:
    """Levels of nodes a map of this many blocks needs (at least one)."""
    depth, span = 1, FANOUT
    while span < blocks:
        depth, span = depth + 1, span * FANOUT
    return depth


def mark_map(root: bytes, get: Callable[[bytes], bytes], live: set[bytes], patches: Container[bytes]) -> None:
    """Add every node and block of the map under `root` to `live`; subtrees already there are skipped.

    A block that is a patch (its id in `patches`) keeps its base too.
    """
    todo = [root]
    while todo:
        node_id = todo.pop()
        if node_id == HOLE or node_id in live:
            continue
        level, ids = decode_node(get(node_id), node_id)
        live.add(node_id)
        if level == 0:
            new = set(ids) - live
            new.discard(HOLE)
            live |= new
            live.update(decode_patch(get(i), i).base for i in new if i in patches)
        else:
            todo.extend(ids)


def mark_maps(
    roots: Iterable[bytes], get: Callable[[bytes], bytes], live: set[bytes], patches: Container[bytes] = ()
) -> None:
    for root in roots:
        mark_map(root, get, live, patches)
