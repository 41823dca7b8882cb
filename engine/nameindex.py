"""The name index: every path of a source's snapshots in the catalog, to search them by name.

A row of `index_versions` is one version of one path, held by every
snapshot of the source whose id is from `first_id` to `last_id` (NULL: to
the newest indexed snapshot, the head). Indexing a snapshot compares its
tree with the head's and skips subtrees whose tree id did not change, so it
costs reads and rows only for what changed. Deleting a snapshot drops the
rows no remaining snapshot holds (`forget`, in the deletion's transaction).

Snapshots are indexed in id order, after they commit; one the index has not
reached yet is indexed before a search (`update`). A stopped indexing is
rolled back at the start of the next: its rows are the only ones that begin
at its snapshot or end at the head.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from .catalog import Catalog
from .catalog.schema import index_dirs, index_heads, index_names, index_versions, snapshots
from .errors import CairnError
from .meta import Kind
from .tree import Entry, parse_entry
from .worktree.freeze import ROOT_NAME

BATCH = 20_000  # changes written in one transaction: short enough not to hold up the working trees' commits
CHUNK = 500  # names looked up in one statement
RESULTS = 100  # paths a search returns

ReadTree = Callable[[bytes], dict[bytes, bytes]]  # a tree's entries by name, as tree.entry_bytes gives them


class Moved(CairnError):
    """Another writer changed the index (dropped it, say) while a snapshot was indexed: that indexing is
    left, to be done again from what the index now holds."""

    temporary = True


@dataclass(frozen=True)
class Found:
    """A path whose name matched, with its newest version and the snapshots that hold it."""

    path: bytes
    kind: int
    size: int
    mtime_ns: int
    versions: int
    first: str  # the oldest snapshot that holds it
    last: str  # the newest


# -- indexing ----------------------------------------------------------------


def update_index(catalog: Catalog, source_id: int, read_tree: ReadTree) -> int:
    """Index the source's snapshots the index has not reached; how many it indexed."""
    with catalog.engine.connect() as conn:
        head = _head(conn, source_id)
        if head is not None and not _exists(conn, head[0]):
            head = None  # deleted behind the index's back (another process): start again
            drop(conn, source_id)
            conn.commit()
        after = 0 if head is None else head[0]
        pending = conn.execute(
            select(snapshots.c.id, snapshots.c.root)
            .where(snapshots.c.source_id == source_id, snapshots.c.id > after)
            .order_by(snapshots.c.id)
        ).all()
    for snapshot_id, root in pending:
        _index_one(catalog, source_id, head, snapshot_id, bytes(root), read_tree)
        head = (snapshot_id, bytes(root))
    return len(pending)


def _index_one(catalog: Catalog, source_id: int, head: tuple[int, bytes] | None, snapshot_id: int, root: bytes,
               read_tree: ReadTree) -> None:  # fmt: skip
    prev_id, prev_root = head if head is not None else (0, None)
    with catalog.engine.begin() as conn:  # take back what a stopped indexing of this snapshot wrote
        mine = index_versions.c.source_id == source_id
        conn.execute(delete(index_versions).where(mine, index_versions.c.first_id == snapshot_id))
        if prev_id:
            conn.execute(update(index_versions).where(mine, index_versions.c.last_id == prev_id).values(last_id=None))
    writer = _Writer(catalog, source_id, snapshot_id, prev_id)
    for change in _changes(read_tree, _top(read_tree, prev_root), _top(read_tree, root), b""):
        writer.add(change)
    with catalog.engine.begin() as conn:
        if _head(conn, source_id) != head:
            raise Moved(f"the name index of source {source_id} changed while snapshot {snapshot_id} was indexed")
        writer.flush(conn)
        _set_head(conn, source_id, snapshot_id, root)


def _top(read_tree: ReadTree, root: bytes | None) -> bytes | None:
    """The tree of a snapshot's top folder (its root tree holds the top folder's own entry)."""
    if root is None:
        return None
    return parse_entry(read_tree(root)[ROOT_NAME]).payload


Change = tuple[bytes, bytes, Entry | None]  # folder, name, the new version (None: the path is gone)


def _changes(read_tree: ReadTree, old: bytes | None, new: bytes | None, folder: bytes) -> Iterator[Change]:
    """What differs between two trees, depth first; a subtree whose id did not change is not read, and an
    entry whose bytes did not change is not parsed."""
    if old == new:
        return
    before = read_tree(old) if old is not None else {}
    after = read_tree(new) if new is not None else {}
    for name in sorted(before.keys() | after.keys()):
        raw_o, raw_n = before.get(name), after.get(name)
        if raw_o == raw_n:
            continue  # the same entry (a folder's: the same subtree)
        o = parse_entry(raw_o) if raw_o is not None else None
        n = parse_entry(raw_n) if raw_n is not None else None
        path = folder + b"/" + name
        if o is not None and n is not None and _same(o, n):
            if o.is_dir:
                yield from _changes(read_tree, o.payload, n.payload, path)
            continue
        if o is not None:
            yield folder, name, None
        if n is not None:
            yield folder, name, n
        old_sub = o.payload if o is not None and o.is_dir else None
        new_sub = n.payload if n is not None and n.is_dir else None
        if old_sub is not None or new_sub is not None:
            yield from _changes(read_tree, old_sub, new_sub, path)


def _same(o: Entry, n: Entry) -> bool:
    """One version: a folder stays one while it is a folder; anything else while nothing about it changed."""
    if o.is_dir or n.is_dir:
        return o.is_dir and n.is_dir
    return (o.kind, o.size, o.mtime_ns, o.payload) == (n.kind, n.size, n.mtime_ns, n.payload)


class _Writer:
    """Changes written a batch at a time: each gone or replaced version closed, each new one added."""

    def __init__(self, catalog: Catalog, source_id: int, snapshot_id: int, prev_id: int):
        self.catalog, self.source_id, self.snapshot_id, self.prev_id = catalog, source_id, snapshot_id, prev_id
        self.changes: list[Change] = []
        self.dirs: dict[bytes, int] = {}

    def add(self, change: Change) -> None:
        self.changes.append(change)
        if len(self.changes) >= BATCH:
            with self.catalog.engine.begin() as conn:
                self.flush(conn)

    def flush(self, conn: Connection) -> None:
        if not self.changes:
            return
        changes, self.changes = self.changes, []
        dirs = self._ids(conn, index_dirs, "path", {f for f, _, _ in changes if f not in self.dirs})
        self.dirs.update(dirs)
        names = self._ids(conn, index_names, "name", {n for _, n, _ in changes})
        closes = [{"s": self.source_id, "d": self.dirs[f], "n": names[n], "last": self.prev_id}
                  for f, n, e in changes if e is None]  # fmt: skip
        if closes and self.prev_id:
            v = index_versions.c
            statement = update(index_versions).where(
                v.source_id == bindparam("s"), v.dir_id == bindparam("d"), v.name_id == bindparam("n"),
                v.last_id.is_(None),
            ).values(last_id=bindparam("last"))  # fmt: skip
            self.catalog.executemany(conn, statement, closes, columns=["last_id"])
        opens = [{"source_id": self.source_id, "dir_id": self.dirs[f], "name_id": names[n], "kind": e.kind,
                  "size": e.size, "mtime_ns": e.mtime_ns, "first_id": self.snapshot_id}
                 for f, n, e in changes if e is not None]  # fmt: skip
        self.catalog.executemany(conn, insert(index_versions), opens, columns=list(opens[0]) if opens else None)

    def _ids(self, conn: Connection, table: Any, column: str, wanted: set[bytes]) -> dict[bytes, int]:
        """The ids of these folders or names, adding those the index does not have yet."""
        found = self._known(conn, table, column, wanted)
        missing = wanted - found.keys()
        if missing:
            rows: list[dict[str, Any]] = [{"source_id": self.source_id, column: v} for v in missing]
            if table is index_names:
                rows = [{**row, "folded": fold(row["name"])} for row in rows]
            self.catalog.insert_ignore(conn, table, rows)
            found.update(self._known(conn, table, column, missing))
        return found

    def _known(self, conn: Connection, table: Any, column: str, wanted: set[bytes]) -> dict[bytes, int]:
        found: dict[bytes, int] = {}
        values = list(wanted)
        for i in range(0, len(values), CHUNK):
            q = select(table.c[column], table.c.id).where(
                table.c.source_id == self.source_id, table.c[column].in_(values[i : i + CHUNK])
            )
            found.update((bytes(value), ident) for value, ident in conn.execute(q))
        return found


def fold(name: bytes) -> str:
    """A name as the search compares it: text, without case."""
    return name.decode("utf-8", "replace").casefold()


# -- forgetting --------------------------------------------------------------


def forget(conn: Connection, source_id: int, snapshot_id: int) -> None:
    """Drop what only this snapshot held; called in the transaction that deletes its row, after the delete."""
    head = _head(conn, source_id)
    if head is None or snapshot_id > head[0]:
        return  # not indexed yet
    s, v = snapshots.c, index_versions.c
    mine = v.source_id == source_id
    before = conn.execute(
        select(func.max(s.id)).where(s.source_id == source_id, s.id < snapshot_id)
    ).scalar() or 0  # fmt: skip
    if snapshot_id == head[0]:
        # The one before becomes the head: what began after it goes, what it holds is open again.
        conn.execute(delete(index_versions).where(mine, v.first_id > before))
        conn.execute(update(index_versions).where(mine, v.last_id >= before).values(last_id=None))
        if before:
            _set_head(conn, source_id, before, conn.execute(select(s.root).where(s.id == before)).scalar_one())
        else:
            drop(conn, source_id)
        return
    after = conn.execute(select(func.min(s.id)).where(s.source_id == source_id, s.id > snapshot_id)).scalar_one()
    conn.execute(delete(index_versions).where(mine, v.first_id > before, v.last_id < after))


def drop(conn: Connection, source_id: int) -> None:
    """Forget a source's index (the source is being removed, or the index is to be made again)."""
    for table in (index_versions, index_heads, index_names, index_dirs):
        conn.execute(delete(table).where(table.c.source_id == source_id))


def _head(conn: Connection, source_id: int) -> tuple[int, bytes] | None:
    row = conn.execute(
        select(index_heads.c.snapshot_id, index_heads.c.root).where(index_heads.c.source_id == source_id)
    ).first()
    return None if row is None else (row[0], bytes(row[1]))


def _set_head(conn: Connection, source_id: int, snapshot_id: int, root: bytes) -> None:
    conn.execute(delete(index_heads).where(index_heads.c.source_id == source_id))
    conn.execute(insert(index_heads).values(source_id=source_id, snapshot_id=snapshot_id, root=root))


def _exists(conn: Connection, snapshot_id: int) -> bool:
    return conn.execute(select(snapshots.c.id).where(snapshots.c.id == snapshot_id)).first() is not None


# -- searching ---------------------------------------------------------------


def pattern(query: str) -> str:
    """A LIKE pattern for what someone typed: `*` and `?` match the whole name as wildcards; else a part of it."""
    q = query.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if "*" in q or "?" in q:
        return q.replace("*", "%").replace("?", "_")
    return f"%{q}%"


def search(conn: Connection, source_id: int, query: str, limit: int = RESULTS) -> tuple[list[Found], bool]:
    """Paths of the source's indexed snapshots whose name matches, by path; and whether there were more."""
    v, n = index_versions.c, index_names.c
    q = (
        select(v.dir_id, v.name_id, n.name, v.kind, v.size, v.mtime_ns, v.first_id, v.last_id)
        .join(index_names, n.id == v.name_id)
        .where(n.source_id == source_id, n.folded.like(pattern(query), escape="\\"))
        .limit(limit * 20)
    )
    paths: dict[tuple[int, int], list[Any]] = {}
    for row in conn.execute(q):
        key = (row.dir_id, row.name_id)
        if key not in paths and len(paths) == limit + 1:
            break
        paths.setdefault(key, []).append(row)
    more = len(paths) > limit
    kept = dict(list(paths.items())[:limit])
    q = select(index_dirs.c.id, index_dirs.c.path).where(index_dirs.c.id.in_({d for d, _ in kept}))
    folders: dict[int, bytes] = {row[0]: bytes(row[1]) for row in conn.execute(q)}
    numbered = conn.execute(
        select(snapshots.c.id, snapshots.c.name).where(snapshots.c.source_id == source_id).order_by(snapshots.c.id)
    ).all()
    ids, names = [r[0] for r in numbered], [r[1] for r in numbered]
    head = _head(conn, source_id)
    through = head[0] if head is not None else 0  # an open row: to the newest indexed snapshot, not beyond
    found = []
    for rows in kept.values():
        newest = max(rows, key=lambda r: r.first_id)
        first = min(r.first_id for r in rows)
        last = max(through if r.last_id is None else r.last_id for r in rows)
        held = (bisect.bisect_left(ids, first), bisect.bisect_right(ids, last) - 1)
        if held[0] > held[1]:
            continue  # its snapshots were deleted while the search ran
        found.append(Found(folders[newest.dir_id] + b"/" + bytes(newest.name), newest.kind, newest.size,
                           newest.mtime_ns, len(rows), names[held[0]], names[held[1]]))  # fmt: skip
    found.sort(key=lambda f: (f.kind != Kind.DIR, f.path))
    return found, more
