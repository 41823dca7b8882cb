"""The mount as numbered nodes: lookups, attributes, listings and reads.

Sources are directories at the root; each holds `current/` (its working
tree), `snapshots/` (read-only snapshots and a `latest` symlink) and, when
an image pool is wired in, `images/` (images.py). Writes are in writes.py;
this module only reads.
"""

from __future__ import annotations

import itertools
import stat as st
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..cache import check_may_block
from ..content import EXTENT_SIZE, ContentReader, packed_ids, unpack_extents
from ..deployment import Deployment, SourceInfo
from ..errors import CorruptBlob, InvalidArgument, NotADirectory, NotFound, quoted
from ..ids import HOLE, ID_SIZE
from ..meta import Kind, Stat
from ..reader import SnapshotView
from ..snapshots import SnapshotInfo, list_numbered
from ..tree import Entry
from ..worktree import WorkingTree
from .images import ImageProvider
from .nodes import (
    CURRENT,
    IMAGE,
    IMAGES,
    IMAGES_DIR,
    LATEST,
    LATEST_NAME,
    ROOT_NODE,
    SNAPSHOT,
    SNAPSHOTS,
    SNAPSHOTS_DIR,
    SOURCE_DIR,
    VIRTUAL,
    WORKING,
    Node,
    node_of,
)

PREFETCH_FILE = 256 << 10  # files up to one chunk
PREFETCH_BYTES = 16 << 20  # per listing: a quarter of the decoded-blob cache
# Chunks read ahead of a sequential reader (~1 MiB each): decoding the next
# ones on another core while the FUSE loop serves this one. Measured on 2 GiB
# with the mount's 2 MiB read-ahead: 4 ahead, a fourth of the reads waited
# for decoding (3.5 s); 12 ahead, asked 3 at a time, a tenth (3.2 s).
READ_AHEAD = 12
READERS = 256  # open snapshot files whose chunk lists stay unpacked
NEXT_DIRS = 1 << 16  # subdirectories remembered with their next sibling, at most
CACHE_SECONDS = (
    1.0  # sources and snapshot lists: other processes change them too (a second, as the kernel caches names)
)


@dataclass(frozen=True)
class _Snapshots:
    numbered: list[tuple[int, SnapshotInfo]]
    at: float


class MountReader:
    """The read side of MountView. Thread-safe. `_lock` guards the caches; engine calls are thread-safe themselves."""

    def __init__(self, deployment: Deployment, images: ImageProvider | None = None):
        self.dep = deployment
        self.images = images
        self._lock = threading.Lock()
        self._sources: tuple[float, dict[str, SourceInfo]] = (0.0, {})
        self._snapshots: dict[int, _Snapshots] = {}
        self._views: dict[int, SnapshotView] = {}
        # Snapshot entries the adapter has looked up, by node number.
        self._entries: dict[int, tuple[Entry, int]] = {}
        self._readers: OrderedDict[int, ContentReader] = OrderedDict()
        # A listed snapshot directory's subdirectories, each with the one after it.
        self._next_dirs: dict[int, Entry] = {}
        self._trees: dict[int, WorkingTree] = {}
        self.started_ns = time.time_ns()

    # -- catalog state, cached ---------------------------------------------

    def sources(self) -> dict[str, SourceInfo]:
        with self._lock:
            at, cached = self._sources
            if time.monotonic() - at < CACHE_SECONDS:
                return cached
        check_may_block()
        fresh = {s.name: s for s in self.dep.list_sources()}
        with self._lock:
            self._sources = (time.monotonic(), fresh)
        return fresh

    def source_by_id(self, source_id: int) -> SourceInfo:
        for info in self.sources().values():
            if info.id == source_id:
                return info
        self.forget_catalog()
        for info in self.sources().values():
            if info.id == source_id:
                return info
        raise NotFound(f"no source {source_id}")

    def snapshots(self, source: SourceInfo) -> list[tuple[int, SnapshotInfo]]:
        with self._lock:
            cached = self._snapshots.get(source.id)
            if cached is not None and time.monotonic() - cached.at < CACHE_SECONDS:
                return cached.numbered
        check_may_block()
        with self.dep.catalog.engine.connect() as conn:
            numbered = list_numbered(conn, source.name)
        with self._lock:
            self._snapshots[source.id] = _Snapshots(numbered, time.monotonic())
        return numbered

    def forget_catalog(self) -> None:
        """Drop cached sources and snapshot lists after a change."""
        with self._lock:
            self._sources = (0.0, {})
            self._snapshots.clear()
            self._trees.clear()

    def tree(self, source_id: int) -> WorkingTree:
        tree = self._trees.get(source_id)
        if tree is None or tree.unloaded:  # let go of while idle: loaded again, with its lease
            check_may_block()
            tree = self.dep.working_tree(self.source_by_id(source_id).name)
            with self._lock:
                self._trees[source_id] = tree
        return tree

    def watch_names(self, tell: Callable[[int, bytes], None]) -> Callable[[], None]:
        """Call `tell(directory node, name)` whenever a name in a working tree appears or goes,
        by whatever path; `tell` runs with that tree's lock held. Returns the call that stops it.
        """

        def watch(source_id: int, parent: int, name: bytes) -> None:
            tell(Node(WORKING, source_id, parent).number, name)

        self.dep.worktrees.name_watchers.append(watch)
        return lambda: self.dep.worktrees.name_watchers.remove(watch)

    def snapshot_view(self, snapshot_id: int, info: SnapshotInfo) -> SnapshotView:
        with self._lock:
            view = self._views.get(snapshot_id)
        if view is None:
            view = SnapshotView(self.dep.trees, info.root, f"{info.source} @ {info.name}")
            with self._lock:
                self._views[snapshot_id] = view
        return view

    # -- lookups -------------------------------------------------------------

    def lookup(self, parent: int, name: bytes) -> Stat:
        node = node_of(parent)
        if node.space == WORKING:
            return _wt(node.owner, self.tree(node.owner).lookup(node.ino, name))
        if node.space == SNAPSHOT:
            entry = self._entry(parent)
            child = self._snapshot_view(node.owner).listing(entry).get(name)
            if child is None:
                raise NotFound(f"no entry {quoted(name)}")
            return self._remember(node.owner, child)
        return self._virtual_lookup(node, name)

    def _virtual_lookup(self, node: Node, name: bytes) -> Stat:
        if node == ROOT_NODE:
            source = self.sources().get(_text(name))
            if source is None:
                raise NotFound(f"no source {quoted(name)}")
            return self._source_stat(source)
        source = self.source_by_id(node.owner)
        if node.ino == SOURCE_DIR:
            if name == CURRENT:
                return _wt(source.id, self.dep.working_tree(source.name).stat(1))
            if name == SNAPSHOTS:
                return self._snapshots_stat(source)
            if name == IMAGES and self.images is not None:
                return self._images_stat(source)
        elif node.ino == IMAGES_DIR and self.images is not None:
            return self.images.lookup(source, name)
        elif node.ino == SNAPSHOTS_DIR:
            numbered = self.snapshots(source)
            if name == LATEST_NAME and numbered:
                return self._latest_stat(source, numbered[-1][1])
            for sid, info in numbered:
                if info.name.encode() == name:
                    return self._remember(sid, self.snapshot_view(sid, info).root)
        else:
            raise NotADirectory(f"node {node.number} is not a directory")
        raise NotFound(f"no entry {quoted(name)}")

    def getattr(self, number: int) -> Stat:
        node = node_of(number)
        if node.space == WORKING:
            return _wt(node.owner, self.tree(node.owner).stat(node.ino))
        if node.space == SNAPSHOT:
            return _entry_stat(number, self._entry(number))
        if node.space == IMAGE and self.images is not None:
            return self.images.getattr(number)
        if node == ROOT_NODE:
            return self._root_stat()
        source = self.source_by_id(node.owner)
        if node.ino == SOURCE_DIR:
            return self._source_stat(source)
        if node.ino == SNAPSHOTS_DIR:
            return self._snapshots_stat(source)
        if node.ino == IMAGES_DIR and self.images is not None:
            return self._images_stat(source)
        numbered = self.snapshots(source)
        if node.ino == LATEST and numbered:
            return self._latest_stat(source, numbered[-1][1])
        raise NotFound(f"no node {number}")

    def listdir(self, number: int) -> list[tuple[bytes, Stat]]:
        node = node_of(number)
        if node.space == WORKING:
            return [(n, _wt(node.owner, s)) for n, s in self.tree(node.owner).listdir(node.ino)]
        if node.space == SNAPSHOT:
            listing = self._snapshot_view(node.owner).listing(self._entry(number))
            entries = sorted(listing.values(), key=lambda e: e.name)
            self._prefetch(entries, self._next_dir(number, entries))
            return [(e.name, stat) for e, stat in zip(entries, self._remember_all(node.owner, entries), strict=True)]
        if node == ROOT_NODE:
            return [(name.encode(), self._source_stat(s)) for name, s in sorted(self.sources().items())]
        source = self.source_by_id(node.owner)
        if node.ino == SOURCE_DIR:
            out = [(CURRENT, self.lookup(number, CURRENT)), (SNAPSHOTS, self._snapshots_stat(source))]
            return [*out, (IMAGES, self._images_stat(source))] if self.images is not None else out
        if node.ino == IMAGES_DIR and self.images is not None:
            return self.images.listdir(source)
        if node.ino == SNAPSHOTS_DIR:
            numbered = self.snapshots(source)
            # A snapshot named like the link (taken before the name was reserved) stays behind it:
            # two entries of one name would break the listing. The CLI and the API still reach it.
            out = [(i.name.encode(), self._remember(sid, self.snapshot_view(sid, i).root))
                   for sid, i in numbered if i.name.encode() != LATEST_NAME]  # fmt: skip
            if numbered:
                out.append((LATEST_NAME, self._latest_stat(source, numbered[-1][1])))
            return sorted(out)
        raise NotADirectory(f"node {number} is not a directory")

    def readlink(self, number: int) -> bytes:
        node = node_of(number)
        if node.space == WORKING:
            return self.tree(node.owner).readlink(node.ino)
        if node.space == SNAPSHOT:
            entry = self._entry(number)
            if entry.kind != Kind.SYMLINK:
                raise InvalidArgument("not a symlink")
            return entry.payload
        if node.space == VIRTUAL and node.ino == LATEST:
            numbered = self.snapshots(self.source_by_id(node.owner))
            if numbered:
                return numbered[-1][1].name.encode()
        raise InvalidArgument("not a symlink")

    def read(self, number: int, offset: int, size: int) -> bytes:
        node = node_of(number)
        if node.space == WORKING:
            return self.tree(node.owner).read(node.ino, offset, size)
        if node.space == SNAPSHOT:
            view = self._snapshot_view(node.owner)
            entry = self._entry(number)
            reader = self._reader(number, view, entry)
            try:
                data = reader.read(offset, size)
            except CorruptBlob as e:
                raise view.damaged(entry.name, e) from e
            if reader.size > PREFETCH_FILE:
                self.dep.blobs.prefetch(reader.ahead(offset + size, READ_AHEAD), batch=READ_AHEAD // 4)
            return data
        if node.space == IMAGE and self.images is not None:
            return self.images.read(number, offset, size)
        raise InvalidArgument("not a regular file")

    def _reader(self, number: int, view: SnapshotView, entry: Entry) -> ContentReader:
        with self._lock:
            reader = self._readers.get(number)
            if reader is not None:
                self._readers.move_to_end(number)
                return reader
        reader = view.reader(entry)
        with self._lock:
            self._readers[number] = reader
            if len(self._readers) > READERS:
                self._readers.popitem(last=False)
        return reader

    def forget(self, number: int, count: int) -> bool:
        """The adapter no longer needs a snapshot entry (FUSE's forget); True once none of it is held."""
        with self._lock:
            held = self._entries.get(number)
            if held is None:
                return True
            left = held[1] - count
            if left <= 0:
                del self._entries[number]
                return True
            self._entries[number] = (held[0], left)
            return False

    # -- snapshot entries ----------------------------------------------------

    def _prefetch(self, entries: list[Entry], after: Entry | None = None) -> None:
        """Small files and subdirectories of a listed directory are likely read next: fetch them now.

        So are the small files of the directory listed after it (`after`, its
        next sibling), when that one's listing is at hand: a walk then finds
        a directory's first files in memory, not a catalog query and a pack
        read away (tar waited ~1 ms at each of 200 directories).
        """
        self.dep.trees.prefetch([e.payload for e in entries if e.kind == Kind.DIR])
        if after is not None and self.dep.trees.holds(after.payload):
            entries = entries + list(self.dep.trees.get(after.payload).values())
        wanted: list[bytes] = []
        for e in _small_files(entries):
            one = _one_chunk(e)
            wanted += [one] if one is not None else packed_ids(e.payload)
        self.dep.blobs.prefetch(wanted)

    def _next_dir(self, number: int, entries: list[Entry]) -> Entry | None:
        """The directory after a listed one among its parent's; notes the same of its own subdirectories."""
        owner = node_of(number).owner
        dirs = [e for e in entries if e.kind == Kind.DIR]
        with self._lock:
            after = self._next_dirs.pop(number, None)
            if len(self._next_dirs) > NEXT_DIRS:
                self._next_dirs.clear()
            for d, next_d in itertools.pairwise(dirs):
                self._next_dirs[Node(SNAPSHOT, owner, d.ino).number] = next_d
        return after

    def small_contents(self, number: int) -> Iterator[tuple[int, bytes]]:
        """Node number and content of the one-chunk files that listing a snapshot directory prefetches, in order.

        Blocks until each has arrived: for an adapter that hands them on
        (FUSE puts them in the kernel's page cache) away from its request loop.
        """
        node = node_of(number)
        if node.space != SNAPSHOT:
            return
        listing = self._snapshot_view(node.owner).listing(self._entry(number))
        for e in _small_files(listing.values()):
            one = _one_chunk(e)
            if one is not None:
                yield Node(SNAPSHOT, node.owner, e.ino).number, self.dep.blobs.get(one)

    def _snapshot_view(self, snapshot_id: int) -> SnapshotView:
        with self._lock:
            view = self._views.get(snapshot_id)
        if view is not None:
            return view
        for source in self.sources().values():
            for sid, info in self.snapshots(source):
                if sid == snapshot_id:
                    return self.snapshot_view(sid, info)
        raise NotFound(f"no snapshot {snapshot_id}")

    def _remember(self, snapshot_id: int, entry: Entry) -> Stat:
        return self._remember_all(snapshot_id, [entry])[0]

    def _remember_all(self, snapshot_id: int, entries: list[Entry]) -> list[Stat]:
        """Stats of entries of one snapshot, each remembered until forgotten (a listing: one lock, not one each)."""
        base = Node(SNAPSHOT, snapshot_id, 0).number
        stats = [_entry_stat(base | e.ino, e) for e in entries]
        with self._lock:
            held = self._entries
            for e, stat in zip(entries, stats, strict=True):
                old = held.get(stat.ino)
                held[stat.ino] = (e, old[1] + 1 if old else 1)
        return stats

    def _entry(self, number: int) -> Entry:
        with self._lock:
            held = self._entries.get(number)
        if held is not None:
            return held[0]
        node = node_of(number)
        view = self._snapshot_view(node.owner)
        if node.ino == view.root.ino:
            return view.root
        raise NotFound(f"snapshot node {number} was not looked up")

    # -- virtual nodes -------------------------------------------------------

    def _root_stat(self) -> Stat:
        n = len(self.sources())
        t = self.started_ns
        return Stat(ROOT_NODE.number, st.S_IFDIR | 0o755, 2 + n, 0, 0, 0, 0, 0, t, t, t)

    def _source_stat(self, source: SourceInfo) -> Stat:
        t = int(source.created * 1e9)
        return Stat(Node(VIRTUAL, source.id, SOURCE_DIR).number, st.S_IFDIR | 0o755, 4, 0, 0, 0, 0, 0, t, t, t)

    def _snapshots_stat(self, source: SourceInfo) -> Stat:
        numbered = self.snapshots(source)
        t = int((numbered[-1][1].created if numbered else source.created) * 1e9)
        number = Node(VIRTUAL, source.id, SNAPSHOTS_DIR).number
        return Stat(number, st.S_IFDIR | 0o555, 2 + len(numbered), 0, 0, 0, 0, 0, t, t, t)

    def _images_stat(self, source: SourceInfo) -> Stat:
        t = int(source.created * 1e9)
        number = Node(VIRTUAL, source.id, IMAGES_DIR).number
        return Stat(number, st.S_IFDIR | 0o755, 2, 0, 0, 0, 0, 0, t, t, t)

    def _latest_stat(self, source: SourceInfo, latest: SnapshotInfo) -> Stat:
        t = int(latest.created * 1e9)
        size = len(latest.name.encode())
        return Stat(Node(VIRTUAL, source.id, LATEST).number, st.S_IFLNK | 0o777, 1, 0, 0, 0, size, 0, t, t, t)


def _one_chunk(e: Entry) -> bytes | None:
    """The chunk a file is stored as, if it is one (as almost every small file is); else None."""
    if len(e.payload) == EXTENT_SIZE and not e.payload.startswith(HOLE):
        return e.payload[:ID_SIZE]
    return None


def _small_files(entries: Iterable[Entry]) -> Iterator[Entry]:
    """The files of a listing worth fetching before they are read: up to a chunk each, PREFETCH_BYTES in all."""
    budget = PREFETCH_BYTES
    for e in entries:
        if e.kind == Kind.FILE and 0 < e.size <= min(PREFETCH_FILE, budget):
            budget -= e.size
            yield e


def _wt(source_id: int, stat: Stat) -> Stat:
    return stat.renumbered(Node(WORKING, source_id, stat.ino).number)


def _entry_stat(number: int, e: Entry) -> Stat:
    blocks = 0
    if e.kind == Kind.FILE:
        stored = e.size if HOLE not in e.payload else sum(n for i, n in unpack_extents(e.payload) if i != HOLE)
        blocks = (stored + 511) // 512
    size = len(e.payload) if e.kind == Kind.SYMLINK else e.size
    return Stat(number, e.st_mode, e.nlink, e.uid, e.gid, e.rdev, size, blocks, e.atime_ns, e.mtime_ns, e.ctime_ns)


def _text(name: bytes) -> str:
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return "\0"  # matches no source
