"""Freezing a working tree into Merkle tree blobs.

Only directories whose `tree_id` is stale are serialized: a snapshot after
one changed file writes one tree per directory on that file's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..content import Extents, pack_extents, total_length
from ..errors import LostWrites
from ..meta import Kind
from ..packs import TREE
from ..tree import Entry, serialize
from . import persist
from .inode import DIR, FILE, ROOT, Inode

if TYPE_CHECKING:
    from .spool import SpoolFile
    from .tree import WorkingTree

ROOT_NAME = b"."
SYMLINK = Kind.SYMLINK  # bound once: an enum member lookup costs about 170 ns
NAMED_AT_MOST = 10  # lost files a refused snapshot names; the rest are counted


@dataclass(frozen=True)
class Frozen:
    top: bytes  # id of a one-entry tree describing the root directory
    files: int
    bytes: int
    trees_written: int


def entry_of(name: bytes, inode: Inode, content: Extents | None = None) -> Entry:
    size = inode.size
    payload = b""
    if inode.kind == FILE:
        if content is None:
            payload = inode.content
        else:
            payload = pack_extents(content)
            size = total_length(content)
    elif inode.kind == DIR:
        assert inode.tree_id is not None
        payload = inode.tree_id
    elif inode.kind == SYMLINK:
        payload = inode.target or b""
    return Entry(
        name, inode.kind, inode.mode, inode.uid, inode.gid, inode.rdev, size,
        inode.atime_ns, inode.mtime_ns, inode.ctime_ns, inode.ino, inode.nlink,
        tuple(sorted(inode.xattrs.items())), payload,
    )  # fmt: skip


def freeze(tree: WorkingTree) -> Frozen:
    """Write the changed directories' trees; refused (LostWrites) while any file's last writes are lost.

    A file whose bytes reached neither the pool nor the spool never enters a
    snapshot, neither empty nor as older content: the snapshot fails, naming it.
    """
    # Files still open for writing are frozen as their spool holds them now.
    # Chunking them happens before taking the tree's lock, which the FUSE loop needs.
    with tree.lock:
        spools = {i: n.spool for i, n in tree.inodes.items() if n.spool is not None}
    checkpoints = {i: (spool, _checkpoint(spool)) for i, spool in spools.items()}
    with tree.commit_lock, tree.lock:
        inodes = tree.inodes
        open_content: dict[int, Extents] = {}
        # Open and lost files are in memory: a directory holding one is never let go of.
        lost: dict[int, str] = {i: n.lost for i, n in inodes.items() if n.lost is not None and n.parents}
        for i, n in inodes.items():
            if n.spool is not None:
                spool, content = checkpoints.get(i, (None, None))
                if spool is not n.spool:
                    content = _checkpoint(n.spool)
                if isinstance(content, LostWrites):
                    if n.parents:  # a file with no name is in no snapshot
                        lost[i] = str(content)
                elif content is not None:
                    open_content[i] = content
        if lost:
            raise _refusal(tree, lost)
        # The rows equal memory from here on (the lock is held): a directory not in memory is read from them.
        persist.commit_held(tree)
        written = 0
        stack: list[tuple[int, list[tuple[bytes, Inode]] | None]] = [(ROOT, None)]
        while stack:
            ino, items = stack.pop()
            d = inodes[ino]
            if items is None:
                if d.tree_id is not None:
                    continue
                items = _items(tree, d)
                stack.append((ino, items))
                stack += [(c.ino, None) for _, c in items if c.is_dir]
                continue
            entries = [entry_of(n, c, open_content.get(c.ino)) for n, c in items]
            d.tree_id = tree.blobs.put(serialize(entries), TREE)
            tree.dirty.add(ino)
            written += 1
        top = tree.blobs.put(serialize([entry_of(ROOT_NAME, inodes[ROOT])]), TREE)
        files, size = persist.totals(tree)
        # An open file's row holds its stored content; the snapshot holds the spool's.
        size += sum(
            total_length(c) - total_length(inodes[i].extents) for i, c in open_content.items() if inodes[i].parents
        )
    return Frozen(top, files, size, written)


def _items(tree: WorkingTree, d: Inode) -> list[tuple[bytes, Inode]]:
    """A stale directory's entries: from memory, or read from its rows without keeping the files in memory.

    Subdirectories read so are kept (they get a new tree id, a change to commit).
    """
    inodes = tree.inodes
    if d.children is not None:
        return [(n, inodes[c]) for n, c in d.children.items()]
    out = []
    for row in persist.entries(tree, d.ino):
        node = inodes.get(row[1])
        if node is None:
            node = Inode.from_row(row[1:])
            if node.is_dir:
                node.parents = [d.ino]
                inodes[node.ino] = node
        out.append((bytes(row[0]), node))
    return out


def _checkpoint(spool: SpoolFile) -> Extents | LostWrites:
    """An open file's content now, or why its writes are lost (other failures fail the snapshot as they are)."""
    try:
        return spool.checkpoint()
    except LostWrites as e:
        return e


def _refusal(tree: WorkingTree, lost: dict[int, str]) -> LostWrites:
    paths = sorted(tree.path(i) for i in lost)
    named = ", ".join(p.decode(errors="backslashreplace") for p in paths[:NAMED_AT_MOST])
    more = f" and {len(paths) - NAMED_AT_MOST} more" if len(paths) > NAMED_AT_MOST else ""
    reason = lost[min(lost)]
    return LostWrites(
        f"snapshot refused: the last writes to {named}{more} reached neither the pool nor the spool "
        f"({reason}); write these files again or delete them, then take the snapshot"
    )
