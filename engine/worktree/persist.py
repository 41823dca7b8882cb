"""Loading a working tree from the catalog and committing its changes in batches.

Crash safety: a row whose chunks were not yet stored is marked pending; on
load, a pending row whose chunks are missing (or whose content does not add
up to its size) is reset to an empty file with mtime 0, so the next rsync
sends it again instead of trusting a quick check on lost data, and it is
marked lost, so no snapshot takes it as empty meanwhile. A file whose writes
were lost while running is written as such a row.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, select, update

from ..blobstore import BlobStore
from ..catalog import Catalog
from ..catalog.schema import dirents, inodes, sources
from ..content import packed_ids, total_length
from ..meta import Kind
from .inode import ROOT, Inode, now_ns


class TreeState(Protocol):
    """What loading and committing need of a working tree."""

    catalog: Catalog
    source_id: int
    blobs: BlobStore
    next_ino: int
    dirty: set[int]
    gone: set[int]
    dirents: dict[tuple[int, bytes], int | None]
    unstored: set[int]

    @property
    def lock(self) -> threading.RLock: ...

    @property
    def commit_lock(self) -> threading.Lock: ...

    @property
    def inodes(self) -> dict[int, Inode]: ...

    def invalidate(self, ino: int) -> None: ...


_BATCH = 500
# The order Inode.from_row reads, then the pending flag.
_COLUMNS = [inodes.c[name] for name in (*Inode.ROW, "pending")]


def load(tree: TreeState) -> None:
    sid = tree.source_id
    with tree.catalog.engine.connect() as conn:
        tree.next_ino = conn.execute(select(sources.c.next_ino).where(sources.c.id == sid)).scalar_one()
        pending: list[int] = []
        for row in tree.catalog.fetch(conn, select(*_COLUMNS).where(inodes.c.source_id == sid)):
            inode = Inode.from_row(row)
            tree.inodes[inode.ino] = inode
            if row[-1]:
                pending.append(inode.ino)
        query = select(dirents.c.parent, dirents.c.name, dirents.c.ino).where(dirents.c.source_id == sid)
        for parent, name, ino in tree.catalog.fetch(conn, query):
            p, child = tree.inodes.get(parent), tree.inodes.get(ino)
            if p is None or child is None or p.children is None:
                continue  # a dangling entry from a torn batch: drop it
            p.children[bytes(name)] = ino
            child.parents.append(parent)
    if ROOT not in tree.inodes:
        root = Inode(ROOT, Kind.DIR, 0o755, 0, 0, now_ns())
        tree.inodes[ROOT] = root
        tree.dirty.add(ROOT)
    for ino in pending:
        _repair(tree, tree.inodes[ino])
    for inode in list(tree.inodes.values()):
        if not inode.parents and inode.ino != ROOT:
            del tree.inodes[inode.ino]  # orphaned by a crash before its release
            tree.gone.add(inode.ino)


def _repair(tree: TreeState, inode: Inode) -> None:
    if inode.tree_id is not None and not tree.blobs.is_stored(inode.tree_id):
        tree.invalidate(inode.ino)  # the next snapshot writes this directory's tree again
    lost = not tree.blobs.all_stored(packed_ids(inode.content))
    if lost or total_length(inode.extents) != inode.size:
        inode.extents = []
        inode.size = 0
        inode.mtime_ns = 0
        if inode.kind == Kind.FILE:
            inode.lost = "its last writes did not reach the pool before the restart"
    tree.dirty.add(inode.ino)
    for parent in inode.parents:
        tree.invalidate(parent)


def _row(tree: TreeState, inode: Inode) -> dict[str, Any]:
    row = inode.to_row(tree.source_id, _has_pending(tree, inode))
    if inode.spool is not None:
        # Unreleased writes are not in the row: make the row's quick-check
        # fields disagree with any client, so a lost write is sent again.
        row["size"] = total_length(inode.extents)
        row["mtime_ns"] = 0
    return row


def commit(tree: TreeState) -> None:
    # One commit at a time: two batches written out of order could bring back an older row.
    with tree.commit_lock:
        with tree.lock:
            # Rows written while their chunks were pending are written again
            # once the chunks are stored, to clear the flag.
            stored = {i for i in tree.unstored if i in tree.inodes and not _has_pending(tree, tree.inodes[i])}
            tree.unstored -= stored
            dirty = tree.dirty | stored
            rows = [_row(tree, tree.inodes[i]) for i in dirty if i in tree.inodes]
            gone = list(tree.gone)
            changed = dict(tree.dirents)
            next_ino = tree.next_ino
            tree.dirty, tree.gone, tree.dirents = set(), set(), {}
            tree.unstored |= {r["ino"] for r in rows if r["pending"]}
        if not rows and not gone and not changed:
            return
        try:
            _write(tree, rows, gone, changed, next_ino)
        except BaseException:
            with tree.lock:
                tree.dirty |= {r["ino"] for r in rows}
                tree.gone |= set(gone)
                for key, value in changed.items():
                    tree.dirents.setdefault(key, value)
            raise


def _has_pending(tree: TreeState, inode: Inode) -> bool:
    """Whether the row refers to blobs not yet stored: chunks, or a directory's tree."""
    if inode.spool is not None or inode.lost is not None:
        return True  # a lost file's row says so: its size and content disagree, and a load sees it
    if inode.tree_id is not None and not tree.blobs.is_stored(inode.tree_id):
        return True
    return not tree.blobs.all_stored(packed_ids(inode.content))


def _write(
    tree: TreeState,
    rows: list[dict[str, Any]],
    gone: list[int],
    changed: dict[tuple[int, bytes], int | None],
    next_ino: int,
) -> None:
    sid = tree.source_id
    with tree.catalog.engine.begin() as conn:
        replaced = [r["ino"] for r in rows] + gone
        for i in range(0, len(replaced), _BATCH):
            conn.execute(delete(inodes).where(inodes.c.source_id == sid, inodes.c.ino.in_(replaced[i : i + _BATCH])))
        catalog = tree.catalog
        catalog.executemany(conn, inodes.insert(), rows)
        forget = delete(dirents).where(
            dirents.c.source_id == bindparam("s"), dirents.c.parent == bindparam("p"), dirents.c.name == bindparam("n")
        )
        catalog.executemany(conn, forget, [{"s": sid, "p": p, "n": n} for p, n in changed])
        added = [
            {"source_id": sid, "parent": p, "name": n, "ino": ino} for (p, n), ino in changed.items() if ino is not None
        ]
        catalog.executemany(conn, dirents.insert(), added)
        conn.execute(update(sources).where(sources.c.id == sid).values(next_ino=next_ino))
