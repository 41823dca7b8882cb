"""Freezing a working tree into Merkle tree blobs.

Only directories whose `tree_id` is stale are serialized: a snapshot after
one changed file writes one tree per directory on that file's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..content import Extents, pack_extents, total_length
from ..meta import Kind
from ..packs import TREE
from ..tree import Entry, serialize
from .inode import ROOT, Inode

if TYPE_CHECKING:
    from .tree import WorkingTree

ROOT_NAME = b"."


@dataclass(frozen=True)
class Frozen:
    top: bytes  # id of a one-entry tree describing the root directory
    files: int
    bytes: int
    trees_written: int


def entry_of(name: bytes, inode: Inode, content: Extents | None = None) -> Entry:
    size = inode.size
    payload = b""
    if inode.kind == Kind.FILE:
        if content is None:
            payload = inode.content
        else:
            payload = pack_extents(content)
            size = total_length(content)
    elif inode.kind == Kind.DIR:
        assert inode.tree_id is not None
        payload = inode.tree_id
    elif inode.kind == Kind.SYMLINK:
        payload = inode.target or b""
    return Entry(
        name, inode.kind, inode.mode, inode.uid, inode.gid, inode.rdev, size,
        inode.atime_ns, inode.mtime_ns, inode.ctime_ns, inode.ino, inode.nlink,
        tuple(sorted(inode.xattrs.items())), payload,
    )  # fmt: skip


def freeze(tree: WorkingTree) -> Frozen:
    # Files still open for writing are frozen as their spool holds them now.
    # Chunking them happens before taking the tree's lock, which the FUSE loop needs.
    with tree.lock:
        spools = {i: n.spool for i, n in tree.inodes.items() if n.spool is not None}
    checkpoints = {i: (spool, spool.checkpoint()) for i, spool in spools.items()}
    with tree.lock:
        inodes = tree.inodes
        open_content: dict[int, Extents] = {}
        for i, n in inodes.items():
            if n.spool is not None:
                spool, content = checkpoints.get(i, (None, None))
                open_content[i] = content if spool is n.spool and content is not None else n.spool.checkpoint()
        written = 0
        stack: list[tuple[int, bool]] = [(ROOT, False)]
        while stack:
            ino, expanded = stack.pop()
            d = inodes[ino]
            if d.tree_id is not None:
                continue
            assert d.children is not None
            if not expanded:
                stack.append((ino, True))
                stack += [(c, False) for c in d.children.values() if inodes[c].is_dir]
                continue
            entries = [entry_of(n, inodes[c], open_content.get(c)) for n, c in d.children.items()]
            d.tree_id = tree.blobs.put(serialize(entries), TREE)
            tree.dirty.add(ino)
            written += 1
        top = tree.blobs.put(serialize([entry_of(ROOT_NAME, inodes[ROOT])]), TREE)
        files = sum(1 for n in inodes.values() if not n.is_dir)
        size = sum(n.size for n in inodes.values() if n.kind == Kind.FILE)
    return Frozen(top, files, size, written)
