"""Reading snapshots: walk a tree, stat, list, read a byte range, diff two snapshots."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .blobstore import BlobStore
from .cache import check_may_block
from .content import ContentReader, unpack_extents
from .errors import CorruptBlob, InvalidArgument, NotADirectory, NotFound, quoted
from .meta import Kind
from .tree import Entry, deserialize
from .worktree.freeze import ROOT_NAME

# Trees up to this size are parsed where asked, even on the FUSE loop: ~300
# entries, well under the ~180 µs a hop to a worker thread costs.
PARSE_INLINE = 32 << 10


class TreeCache:
    """Parsed trees by id, a bounded number of them. Thread-safe via `_lock`."""

    def __init__(self, blobs: BlobStore, capacity: int = 512):
        self.blobs = blobs
        self.capacity = capacity
        self._lock = threading.Lock()
        self._trees: OrderedDict[bytes, dict[bytes, Entry]] = OrderedDict()

    def get(self, tree_id: bytes) -> dict[bytes, Entry]:
        with self._lock:
            tree = self._trees.get(tree_id)
            if tree is not None:
                self._trees.move_to_end(tree_id)
                return tree
        blob = self.blobs.get(tree_id)  # WouldBlock unless cached (a prefetch may have read it)
        if len(blob) > PARSE_INLINE:
            check_may_block()
        return self._parsed(tree_id, blob)

    def _parsed(self, tree_id: bytes, blob: bytes) -> dict[bytes, Entry]:
        tree = {e.name: e for e in deserialize(blob)}
        with self._lock:
            self._trees[tree_id] = tree
            while len(self._trees) > self.capacity:
                self._trees.popitem(last=False)
        return tree

    def holds(self, tree_id: bytes) -> bool:
        return tree_id in self._trees

    def clear(self) -> None:
        with self._lock:
            self._trees.clear()

    def prefetch(self, tree_ids: list[bytes]) -> None:
        """Read and parse trees in the background (the subdirectories of a listing)."""
        with self._lock:
            wanted = [i for i in tree_ids if i not in self._trees][: self.capacity // 2]
        self.blobs.prefetch(wanted, self._parsed)


def root_entry(trees: TreeCache, top: bytes) -> Entry:
    entry = trees.get(top).get(ROOT_NAME)
    if entry is None or entry.kind != Kind.DIR:
        raise CorruptBlob("snapshot top tree lacks its root entry", blob_id=top)
    return entry


class SnapshotView:
    """One snapshot as a read-only tree. Immutable, so thread-safe."""

    def __init__(self, trees: TreeCache, top: bytes, label: str = "snapshot"):
        self.trees = trees
        self.label = label  # "source @ snapshot", for messages
        self.root = root_entry(trees, top)

    def listing(self, entry: Entry) -> dict[bytes, Entry]:
        if entry.kind != Kind.DIR:
            raise NotADirectory(f"{quoted(entry.name)} is not a directory")
        return self.trees.get(entry.payload)

    def lookup(self, path: bytes) -> Entry:
        entry = self.root
        for part in path.split(b"/"):
            if not part or part == b".":
                continue
            child = self.listing(entry).get(part)
            if child is None:
                raise NotFound(f"no {quoted(path)} in this snapshot")
            entry = child
        return entry

    def listdir(self, path: bytes = b"") -> list[Entry]:
        return sorted(self.listing(self.lookup(path)).values(), key=lambda e: e.name)

    def walk(self, path: bytes = b"") -> Iterator[tuple[bytes, Entry]]:
        """(path, entry) of everything below `path`, depth first in name order."""
        return walk_tree(self.lookup(path), path.strip(b"/"), lambda entry, _: self._sorted(entry))

    def _sorted(self, entry: Entry) -> Iterator[Entry]:
        return iter(sorted(self.listing(entry).values(), key=lambda e: e.name))

    def reader(self, entry: Entry) -> ContentReader:
        if entry.kind != Kind.FILE:
            raise InvalidArgument(f"{quoted(entry.name)} is not a regular file")
        return ContentReader(self.trees.blobs, unpack_extents(entry.payload))

    def read(self, path: bytes, offset: int = 0, size: int = -1) -> bytes:
        reader = self.reader(self.lookup(path))
        try:
            return reader.read(offset, reader.size if size < 0 else size)
        except CorruptBlob as e:
            raise self.damaged(path, e) from e

    def damaged(self, path: bytes, e: CorruptBlob) -> CorruptBlob:
        """The same error, saying which source, snapshot and path it hit."""
        where = path.decode("utf-8", "backslashreplace")
        return CorruptBlob(f"{self.label}: {where}: {e}", blob_id=e.blob_id, pack=e.pack)


@dataclass(frozen=True)
class Change:
    path: bytes
    change: str  # "added", "removed", "modified"
    old: Entry | None
    new: Entry | None


def diff(a: SnapshotView, b: SnapshotView) -> Iterator[Change]:
    """What changed from a to b; subtrees with equal ids are skipped unread."""
    yield from _diff_trees(a, b, b"", a.root, b.root)


def _diff_trees(a: SnapshotView, b: SnapshotView, prefix: bytes, ea: Entry, eb: Entry) -> Iterator[Change]:
    if ea.payload == eb.payload:
        return
    la, lb = a.listing(ea), b.listing(eb)
    for name in sorted(la.keys() | lb.keys()):
        path = prefix + b"/" + name if prefix else name
        x, y = la.get(name), lb.get(name)
        if x is None or y is None:
            yield Change(path, "added" if x is None else "removed", x, y)
            continue
        if x.kind == Kind.DIR and y.kind == Kind.DIR:
            if _meta(x) != _meta(y):
                yield Change(path, "modified", x, y)
            yield from _diff_trees(a, b, path, x, y)
        elif _meta(x) != _meta(y) or x.payload != y.payload:
            yield Change(path, "modified", x, y)


def _meta(e: Entry) -> tuple[object, ...]:
    """What a change means to a user: not atime, ctime or inode numbers."""
    return (e.kind, e.mode, e.uid, e.gid, e.rdev, e.size, e.mtime_ns, e.nlink, e.xattrs)


def walk_tree(
    top: Entry, rel: bytes, children: Callable[[Entry, bytes], Iterator[Entry]]
) -> Iterator[tuple[bytes, Entry]]:
    """(path, entry) below `top` (at `rel`), depth first, a directory's entries as `children(dir, path)` gives them."""
    stack = [(rel, children(top, rel))]
    while stack:
        prefix, listing = stack[-1]
        child = next(listing, None)
        if child is None:
            stack.pop()
            continue
        child_path = prefix + b"/" + child.name if prefix else child.name
        yield child_path, child
        if child.kind == Kind.DIR:
            stack.append((child_path, children(child, child_path)))
