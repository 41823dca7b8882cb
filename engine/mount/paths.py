"""What a path-based adapter (the WebDAV share) needs of the mount beyond node numbers.

Paths are resolved by lookups from the root, so WebDAV and FUSE show one
tree. Also here: an ETag derived from a file's chunk ids, listings handed
out in pages, and copying a file by its chunk list without reading it.

Snapshot entries looked up here are remembered by the view until `forget`,
as FUSE lookups are; the adapter forgets what it looked up when a request ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

from ..content import Extents, chunk_ids, unpack_extents
from ..errors import InvalidArgument, InvalidName, IsADirectory, NotFound, quoted
from ..meta import Kind, Stat, check_name
from .nodes import LATEST, ROOT, SNAPSHOT, VIRTUAL, WORKING, node_of
from .view import PREFETCH_BYTES, PREFETCH_FILE, _wt
from .writes import MountView

PAGE = 1000  # entries per page of a listing: a 100,000-entry directory is 100 pages


def split(path: bytes) -> list[bytes]:
    """The names of a `/`-separated path; `.` and `..` are refused, not interpreted."""
    names = [n for n in path.split(b"/") if n]
    for name in names:
        check_name(name)  # rejects ".", "..", NUL and names over 255 bytes
    return names


def resolve(view: MountView, names: Sequence[bytes], follow_latest: bool = True) -> list[Stat]:
    """The Stat of every node along a path, root first. `snapshots/latest` is followed."""
    stats = [view.getattr(ROOT)]
    for name in names:
        stat = view.lookup(stats[-1].ino, name)
        if follow_latest and is_latest(stat):
            stat = view.lookup(stats[-1].ino, view.readlink(stat.ino))
        stats.append(stat)
    return stats


def is_latest(stat: Stat) -> bool:
    node = node_of(stat.ino)
    return node.space == VIRTUAL and node.ino == LATEST


def _packed(view: MountView, number: int) -> tuple[int, bytes | None] | None:
    """A node's kind and packed chunk list (None while open for writing); None for a virtual node."""
    node = node_of(number)
    if node.space == WORKING:
        return view.tree(node.owner).packed(node.ino)
    if node.space == SNAPSHOT:
        entry = view._entry(number)
        return entry.kind, entry.payload
    return None


def content_tag(view: MountView, number: int) -> str | None:
    """An ETag from a file's chunk ids: stable across restarts, equal for equal content.

    None for a file that is open for writing (its chunk list is not final).
    """
    found = _packed(view, number)
    if found is None or found[1] is None:
        return None
    return hashlib.blake2b(found[1], digest_size=16).hexdigest()


def extents(view: MountView, number: int) -> Extents | None:
    """A regular file's chunk list, or None while it is open for writing."""
    found = _packed(view, number)
    if found is None or found[0] != Kind.FILE:
        raise InvalidArgument("not a regular file")
    return None if found[1] is None else unpack_extents(found[1])


def pages(view: MountView, number: int, size: int = PAGE) -> Iterator[list[tuple[bytes, Stat]]]:
    """A directory's entries sorted by name, `size` at a time.

    Only the names are taken at once; attributes are looked up page by page,
    and an entry removed meanwhile is skipped.
    """
    node = node_of(number)
    if node.space == WORKING:
        tree = view.tree(node.owner)
        names = tree.names(node.ino)
        for start in range(0, len(names), size):
            page = []
            for name in names[start : start + size]:
                try:
                    page.append((name, _wt(node.owner, tree.lookup(node.ino, name))))
                except NotFound:
                    continue
            yield page
    elif node.space == SNAPSHOT:
        listing = view._snapshot_view(node.owner).listing(view._entry(number))
        names = sorted(listing)
        for start in range(0, len(names), size):
            yield [(n, view._remember(node.owner, listing[n])) for n in names[start : start + size]]
    else:
        yield view.listdir(number)


def copy_file(view: MountView, number: int, parent: int, name: bytes) -> Stat:
    """Copy a file into the working tree by its chunk list: no bytes are read or written.

    An existing file of that name is overwritten; mode, times and xattrs come along.
    """
    src = view.getattr(number)
    if src.kind != Kind.FILE:
        raise InvalidArgument("only regular files are copied this way")
    content = extents(view, number)
    if content is None:
        raise InvalidArgument("the file is being written")
    xattrs = view.xattrs(number)
    _, tree = view._working(parent)  # raises ReadOnly outside the working tree
    try:
        existing = view.lookup(parent, name)
    except NotFound:
        existing = view.create(parent, name, src.mode, src.uid, src.gid)
        view.release(existing.ino)
    if existing.kind == Kind.DIR:
        raise IsADirectory(f"{quoted(name)} is a directory")
    if existing.kind != Kind.FILE:
        raise InvalidName(f"{quoted(name)} is not a regular file")
    ino = node_of(existing.ino).ino
    tree.set_content(ino, content)
    tree.set_xattrs(ino, xattrs)
    return view.setattr(existing.ino, mode=src.mode, atime_ns=src.atime_ns, mtime_ns=src.mtime_ns)


def remove(view: MountView, parent: int, name: bytes) -> None:
    """Remove an entry of a working tree; a directory goes with everything below it."""
    node, tree = view._working(parent)  # sources and snapshots are not removed this way
    tree.remove_tree(node.ino, name)


def prefetch(view: MountView, stats: Sequence[Stat], budget: int = PREFETCH_BYTES) -> int:
    """Read the chunks of a listing's small files into the cache in the background.

    A client that lists a directory usually fetches its files next (rclone,
    file managers): one catalog query and one pack read for a page of small
    files, instead of one of each per file. Returns the bytes asked for.
    """
    wanted: list[bytes] = []
    asked = 0
    for stat in stats:
        if stat.kind != Kind.FILE or not 0 < stat.size <= min(PREFETCH_FILE, budget - asked):
            continue
        try:
            content = extents(view, stat.ino)
        except NotFound:
            continue
        if content:
            wanted += chunk_ids(content)
            asked += stat.size
    view.dep.blobs.prefetch(wanted)
    return asked
