"""Restoring a snapshot path into a working tree (`current/`), by reference: no bytes are copied.

Files take the snapshot's chunk lists, so bringing back a folder of any size
costs a catalog row per entry. A restore onto a name that exists is refused
unless it is asked to overwrite: then what exists under the same name is
replaced (a directory is merged into). Metadata comes along. Hard links come
back as separate files.
"""

from __future__ import annotations

import os
import stat as st
from typing import TYPE_CHECKING

from .content import unpack_extents
from .errors import CairnError, Exists, InvalidArgument, NotFound
from .meta import Kind
from .reader import SnapshotView
from .restore import RestoreStats
from .tree import Entry
from .worktree import WorkingTree
from .worktree.inode import ROOT

if TYPE_CHECKING:
    from .deployment import Deployment


def restore_in_place(
    dep: Deployment, source: str, snapshot: str, path: str, to: str | None = None, into: str | None = None,
    overwrite: bool = False,
) -> dict[str, object]:  # fmt: skip
    """Restore `path` of a snapshot into current/ (at `to`, of source `into`); what was done, as a document.

    Exists if the destination does and `overwrite` is not given.
    """
    target, dest = into or source, to or path
    view = dep.snapshot(source, snapshot)
    tree = dep.working_tree(target)
    if not overwrite:
        refuse_existing(tree, dest, target)
    stats = restore_into(view, os.fsencode(path), tree, os.fsencode(dest))
    return {"restored": path, "to": f"{target}/current/{dest.strip('/')}", "files": stats.files, "bytes": stats.bytes}


def refuse_existing(tree: WorkingTree, dest: str, source: str) -> None:
    """Exists if `dest` names something in the working tree (a path the restore would replace or merge into)."""
    parts = os.fsencode(dest).strip(b"/")
    if not parts:
        return  # not a destination at all: restore_into says so
    try:
        tree.resolve(parts)
    except CairnError:  # missing, or a file on the way: the restore makes it, or says what is wrong
        return
    raise Exists(f"{source}/current/{dest.strip('/')} exists: restore to another path, or ask to overwrite it")


def restore_into(view: SnapshotView, path: bytes, tree: WorkingTree, dest: bytes) -> RestoreStats:
    """Bring `path` of a snapshot back at `dest`, a path in a working tree (any source's; missing parents are made)."""
    stats = RestoreStats()
    entry = view.lookup(path)
    parent_path, _, name = dest.strip(b"/").rpartition(b"/")
    if not name or name in (b".", b"..") or b"/../" in b"/" + dest + b"/":
        raise InvalidArgument(f"give the path to restore to, inside current/, not {os.fsdecode(dest)!r}")
    _place(view, tree, _directory(tree, parent_path), name, entry, stats)
    return stats


def _directory(tree: WorkingTree, path: bytes) -> int:
    """The directory at `path`, made (0755) where it is missing; a file in the way is an error."""
    ino = ROOT
    for part in path.split(b"/"):
        if part in (b"", b"."):
            continue
        try:
            found = tree.lookup(ino, part)
        except NotFound:
            found = tree.mkdir(ino, part, 0o755)
        if not st.S_ISDIR(found.mode):
            raise InvalidArgument(f"{os.fsdecode(part)!r} on the way to the restore's destination is not a directory")
        ino = found.ino
    return ino


def _place(view: SnapshotView, tree: WorkingTree, parent: int, name: bytes, e: Entry, stats: RestoreStats) -> None:
    existing = _existing(tree, parent, name)
    if existing is not None and (e.kind != Kind.DIR or not st.S_ISDIR(existing)):
        tree.remove_tree(parent, name)
        existing = None
    if e.kind == Kind.DIR:
        ino = tree.lookup(parent, name).ino if existing is not None else tree.mkdir(parent, name, e.mode).ino
        for child in sorted(view.listing(e).values(), key=lambda c: c.name):
            _place(view, tree, ino, child.name, child, stats)
        stats.dirs += 1
    elif e.kind == Kind.FILE:
        ino = tree.create(parent, name, e.mode).ino
        tree.set_content(ino, unpack_extents(e.payload))
        stats.files += 1
        stats.bytes += e.size
    elif e.kind == Kind.SYMLINK:
        ino = tree.symlink(parent, name, e.payload).ino
    else:
        ino = tree.mknod(parent, name, e.st_mode, e.rdev).ino
    tree.set_xattrs(ino, dict(e.xattrs))
    tree.setattr(ino, mode=e.mode, uid=e.uid, gid=e.gid, atime_ns=e.atime_ns, mtime_ns=e.mtime_ns)


def _existing(tree: WorkingTree, parent: int, name: bytes) -> int | None:
    try:
        return tree.lookup(parent, name).mode
    except NotFound:
        return None
