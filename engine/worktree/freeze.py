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
from .inode import ROOT, Inode

if TYPE_CHECKING:
    from .spool import SpoolFile
    from .tree import WorkingTree

ROOT_NAME = b"."
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
    """Write the changed directories' trees; refused (LostWrites) while any file's last writes are lost.

    A file whose bytes reached neither the pool nor the spool never enters a
    snapshot, neither empty nor as older content: the snapshot fails, naming it.
    """
    # Files still open for writing are frozen as their spool holds them now.
    # Chunking them happens before taking the tree's lock, which the FUSE loop needs.
    with tree.lock:
        spools = {i: n.spool for i, n in tree.inodes.items() if n.spool is not None}
    checkpoints = {i: (spool, _checkpoint(spool)) for i, spool in spools.items()}
    with tree.lock:
        inodes = tree.inodes
        open_content: dict[int, Extents] = {}
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
            raise _refusal(inodes, lost)
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


def _checkpoint(spool: SpoolFile) -> Extents | LostWrites:
    """An open file's content now, or why its writes are lost (other failures fail the snapshot as they are)."""
    try:
        return spool.checkpoint()
    except LostWrites as e:
        return e


def _refusal(inodes: dict[int, Inode], lost: dict[int, str]) -> LostWrites:
    paths = sorted(path_of(inodes, i) for i in lost)
    named = ", ".join(p.decode(errors="backslashreplace") for p in paths[:NAMED_AT_MOST])
    more = f" and {len(paths) - NAMED_AT_MOST} more" if len(paths) > NAMED_AT_MOST else ""
    reason = lost[min(lost)]
    return LostWrites(
        f"snapshot refused: the last writes to {named}{more} reached neither the pool nor the spool "
        f"({reason}); write these files again or delete them, then take the snapshot"
    )


def path_of(inodes: dict[int, Inode], ino: int) -> bytes:
    """A path of a node in the tree (its first name), as `current/` shows it."""
    parts: list[bytes] = []
    while ino != ROOT:
        inode = inodes[ino]
        if not inode.parents:
            break
        parent = inodes[inode.parents[0]]
        assert parent.children is not None
        parts.append(next((n for n, c in parent.children.items() if c == ino), b"?"))
        ino = parent.ino
    return b"/".join(reversed(parts))
