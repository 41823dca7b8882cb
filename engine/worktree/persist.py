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

from sqlalchemy import Connection, bindparam, case, delete, func, select, update

from ..blobstore import BlobStore
from ..cache import check_may_block
from ..catalog import Catalog
from ..catalog.schema import dirents, inodes, sources
from ..content import packed_ids, total_length
from ..errors import NotFound
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
    unstored: dict[int, tuple[bytes, bytes | None] | None]
    unstored_checked: int  # the store's `packs_stored` when `unstored` was last checked

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
    """Load the root and the rows a crash left pending (repaired); the rest loads when used."""
    sid = tree.source_id
    with tree.catalog.engine.connect() as conn:
        tree.next_ino = conn.execute(select(sources.c.next_ino).where(sources.c.id == sid)).scalar_one()
        pending = [r[0] for r in conn.execute(select(inodes.c.ino).where(inodes.c.source_id == sid, inodes.c.pending))]
    try:
        fault(tree, ROOT)
    except NotFound:
        root = tree.inodes[ROOT] = Inode(ROOT, Kind.DIR, 0o755, 0, 0, now_ns())
        root.children = None  # loaded on first use, as every directory's entries are
        tree.dirty.add(ROOT)
    for ino in pending:
        try:
            _repair(tree, tree.inodes.get(ino) or fault(tree, ino))
        except NotFound:
            continue  # gone meanwhile


_BY_NAME = select(dirents.c.name, *_COLUMNS).join(
    inodes, (inodes.c.source_id == dirents.c.source_id) & (inodes.c.ino == dirents.c.ino)
)
# The queries of a lazy load, compiled once each (see Catalog.fetch).
_LISTING = _BY_NAME.where(dirents.c.source_id == bindparam("sid"), dirents.c.parent == bindparam("parent"))
_ROW = select(*_COLUMNS).where(inodes.c.source_id == bindparam("sid"), inodes.c.ino == bindparam("ino"))
_PARENTS = select(dirents.c.parent).where(dirents.c.source_id == bindparam("sid"), dirents.c.ino == bindparam("ino"))


def fault(tree: TreeState, ino: int) -> Inode:
    """Load one inode by number, with the directories that name it and theirs up to the root."""
    check_may_block()
    sid = tree.source_id
    with tree.catalog.engine.connect() as conn:
        rows = tree.catalog.fetch(conn, _ROW, {"sid": sid, "ino": ino})
        if not rows:
            raise NotFound(f"no inode {ino}")
        inode = Inode.from_row(rows[0])
        inode.parents = _parents(tree, conn, ino)
    tree.inodes[ino] = inode
    _load_parents(tree, inode)
    return inode


def _load_parents(tree: TreeState, inode: Inode) -> None:
    """Load the directories naming an inode that are not in memory, and theirs up to the root."""
    for parent in set(inode.parents):
        if parent not in tree.inodes:
            fault(tree, parent)


def fill(tree: TreeState, d: Inode) -> None:
    """Load a directory's entries; an entry already in memory (loaded by number) is kept as it is."""
    check_may_block()
    sid, loaded = tree.source_id, tree.inodes
    children: dict[bytes, int] = {}
    linked: list[Inode] = []
    with tree.catalog.engine.connect() as conn:
        for row in tree.catalog.fetch(conn, _LISTING, {"sid": sid, "parent": d.ino}):
            ino = row[1]
            children[bytes(row[0])] = ino
            if ino in loaded:
                continue  # its parents are complete already
            child = Inode.from_row(row[1:])
            loaded[ino] = child
            if child.nlink > 1 and not child.is_dir:
                linked.append(child)  # other names, maybe in other directories
            else:
                child.parents.append(d.ino)
        for child in linked:
            child.parents = _parents(tree, conn, child.ino)
    d.children = children
    for child in linked:
        _load_parents(tree, child)


def load_all(tree: TreeState, at_most: int) -> list[int] | None:
    """Load every row at once, in two scans, if the tree has at most `at_most` inodes (else None).

    The caller holds `lock` and has just committed, so the rows equal memory. Returns the
    directories whose entries this loaded.
    """
    check_may_block()
    sid, loaded = tree.source_id, tree.inodes
    with tree.catalog.engine.connect() as conn:
        count = conn.execute(select(func.count()).where(inodes.c.source_id == sid)).scalar_one()
        if count > at_most:
            return None
        fresh = {}
        for row in tree.catalog.fetch(conn, select(*_COLUMNS).where(inodes.c.source_id == sid)):
            if row[0] not in loaded:
                fresh[row[0]] = Inode.from_row(row)
        listings: dict[int, dict[bytes, int]] = {}
        query = select(dirents.c.parent, dirents.c.name, dirents.c.ino).where(dirents.c.source_id == sid)
        for parent, name, ino in tree.catalog.fetch(conn, query):
            listings.setdefault(parent, {})[bytes(name)] = ino
    loaded.update(fresh)
    filled = []
    for parent, children in listings.items():
        for ino in children.values():
            child = fresh.get(ino)
            if child is not None:
                child.parents.append(parent)
        d = loaded.get(parent)
        if d is not None and d.is_dir and d.children is None:
            d.children = {n: i for n, i in children.items() if i in loaded}
            filled.append(parent)
    for ino, d in loaded.items():
        if d.is_dir and d.children is None:  # no entries in the catalog: empty
            d.children = {}
            filled.append(ino)
    return filled


def entries(tree: TreeState, parent: int) -> list[Any]:
    """A directory's rows as the catalog has them: (name, *the columns Inode.from_row reads, pending)."""
    check_may_block()
    with tree.catalog.engine.connect() as conn:
        return tree.catalog.fetch(conn, _LISTING, {"sid": tree.source_id, "parent": parent})


def _parents(tree: TreeState, conn: Connection, ino: int) -> list[int]:
    """The directories naming an inode, once per name."""
    return [r[0] for r in tree.catalog.fetch(conn, _PARENTS, {"sid": tree.source_id, "ino": ino})]


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
        commit_held(tree)


def commit_held(tree: TreeState) -> None:
    """`commit`, by a caller that holds `commit_lock` (and may hold `lock`)."""
    with tree.lock:
        # A row written while its blobs were pending has its flag cleared once they are
        # stored: by a row update, so the inode need not stay in memory meanwhile.
        # Checked again only once a pack was stored since: a first backup leaves a row per file pending.
        cleared: dict[int, tuple[bytes, bytes | None] | None] = {}
        stored_now = tree.blobs.packs_stored
        if stored_now != tree.unstored_checked:
            cleared = {i: w for i, w in tree.unstored.items() if w is not None and not _waits(tree, *w)}
            tree.unstored_checked = stored_now
        for i in cleared:
            del tree.unstored[i]
        loaded = [tree.inodes[i] for i in tree.dirty if i in tree.inodes]
        # An inode without a name (unlinked, still open) has no row: nothing could load it after a crash.
        named = [n for n in loaded if n.parents or n.ino == ROOT]
        rows = [_row(tree, n) for n in named]
        gone = list(tree.gone.union(n.ino for n in loaded if not n.parents and n.ino != ROOT))
        changed = dict(tree.dirents)
        next_ino = tree.next_ino
        tree.dirty, tree.gone, tree.dirents = set(), set(), {}
        for n, row in zip(named, rows, strict=True):
            if row["pending"]:
                tree.unstored[n.ino] = _waiting(n)
            else:
                tree.unstored.pop(n.ino, None)
        for i in gone:
            tree.unstored.pop(i, None)
        rewritten = {n.ino for n in named}.union(gone)
        stored = [i for i in cleared if i not in rewritten]
    if not rows and not gone and not changed and not stored:
        return
    try:
        _write(tree, rows, gone, changed, next_ino, stored)
    except BaseException:
        with tree.lock:
            tree.dirty |= {r["ino"] for r in rows}
            tree.gone |= set(gone)
            for key, value in changed.items():
                tree.dirents.setdefault(key, value)
            for i, w in cleared.items():
                tree.unstored.setdefault(i, w)
            tree.unstored_checked = -1
        raise


def _waiting(inode: Inode) -> tuple[bytes, bytes | None] | None:
    """What a pending row waits for: its chunks and tree, or None when only a new row clears it (an open or
    lost file)."""
    if inode.spool is not None or inode.lost is not None:
        return None
    return inode.content, inode.tree_id


def _waits(tree: TreeState, content: bytes, tree_id: bytes | None) -> bool:
    if tree_id is not None and not tree.blobs.is_stored(tree_id):
        return True
    return not tree.blobs.all_stored(packed_ids(content))


def _has_pending(tree: TreeState, inode: Inode) -> bool:
    """Whether the row refers to blobs not yet stored: chunks, or a directory's tree.

    An open or lost file's row always does (a lost one's size and content disagree, and a load sees it).
    """
    waiting = _waiting(inode)
    return waiting is None or _waits(tree, *waiting)


def _write(
    tree: TreeState,
    rows: list[dict[str, Any]],
    gone: list[int],
    changed: dict[tuple[int, bytes], int | None],
    next_ino: int,
    stored: list[int],
) -> None:
    sid = tree.source_id
    with tree.catalog.engine.begin() as conn:
        for i in range(0, len(stored), _BATCH):
            done = stored[i : i + _BATCH]
            conn.execute(update(inodes).where(inodes.c.source_id == sid, inodes.c.ino.in_(done)).values(pending=False))
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


def totals(tree: TreeState) -> tuple[int, int]:
    """How many non-directories the committed rows hold, and their files' bytes."""
    size = func.coalesce(func.sum(case((inodes.c.kind == Kind.FILE, inodes.c.size), else_=0)), 0)
    query = select(func.count(), size).where(inodes.c.source_id == tree.source_id, inodes.c.kind != Kind.DIR)
    with tree.catalog.engine.connect() as conn:
        files, size = conn.execute(query).one()
    return int(files), int(size)
