"""The backup fast path: walk a local tree into a source's working tree, then snapshot.

Unchanged files are recognised as rsync does, by size and mtime, plus the
inode number and ctime (a chmod, chown or xattr change moves ctime), and
cost one lstat each.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .blobstore import BlobStore
from .chunker import SMALL_FILE
from .content import Extents
from .errors import CairnError
from .ingest import chunk_fd
from .meta import Kind, Stat, kind_of
from .snapshots import SnapshotInfo
from .walkreads import File, ReadAhead, Window, open_flags, read_xattrs
from .worktree import WorkingTree
from .worktree.inode import ROOT
from .worktree.residency import trim_target
from .worktree.tree import Quick

Progress = Callable[["BackupStats"], None]
COMMIT_ROWS = 50_000  # rows a walk leaves to commit at most (about 1 KB of memory each while committed)


class SnapshotMaker(Protocol):
    """What a backup needs of a deployment."""

    @property
    def blobs(self) -> BlobStore: ...

    def working_tree(self, name: str) -> WorkingTree: ...

    def create_snapshot(self, source: str, name: str | None = None) -> SnapshotInfo: ...

    def check_writable(self) -> None: ...


@dataclass
class BackupStats:
    files: int = 0
    dirs: int = 0
    changed: int = 0
    bytes_read: int = 0
    removed: int = 0
    errors: list[str] = field(default_factory=list)


class _Walker:
    def __init__(self, tree: WorkingTree, blobs: BlobStore, progress: Progress | None):
        self.tree = tree
        self.blobs = blobs
        self.progress = progress
        self.stats = BackupStats()
        self.links: dict[tuple[int, int], int] = {}
        self.ahead = ReadAhead()

    def run(self, root: bytes) -> None:
        st = os.lstat(root)
        if not stat.S_ISDIR(st.st_mode):
            raise CairnError(f"{os.fsdecode(root)} is not a directory")
        self.tree.preload()  # the walk visits every directory
        self.sync_dir(root, ROOT)
        self.sync_meta(root, ROOT, self.tree.stat(ROOT), st)

    def sync_dir(self, path: bytes, ino: int) -> None:
        self.stats.dirs += 1
        try:
            with os.scandir(path) as it:
                local = {e.name: e for e in it}
        except OSError as e:
            self.stats.errors.append(f"{os.fsdecode(path)}: {e.strerror}")
            return
        existing = self.tree.quick_list(ino)
        for name in existing.keys() - local.keys():
            self.remove(ino, name)
        entries = []
        for name in sorted(local):
            child = path + b"/" + name
            try:
                entries.append((name, child, local[name].stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue  # vanished while we walked
            except OSError as e:
                self.stats.errors.append(f"{os.fsdecode(child)}: {e.strerror}")
        window = self.ahead.directory(
            [(child, st.st_size, st.st_uid) for name, child, st in entries if _to_read(st, existing.get(name))]
        )
        try:
            for name, child, st in entries:
                try:
                    self.sync_entry(child, ino, name, st, existing.get(name), window)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    self.stats.errors.append(f"{os.fsdecode(child)}: {e.strerror}")
        finally:
            window.close()
        if self.tree.loaded > self.tree.keep:  # committed rows can leave memory; they load again if needed
            self.tree.commit()
            self.tree.trim(trim_target(self.tree.keep))
        elif len(self.tree.dirty) > COMMIT_ROWS:  # a commit builds every row at once: bound it
            self.tree.commit()
        if self.progress is not None:
            self.progress(self.stats)

    def remove(self, parent: int, name: bytes) -> None:
        self.stats.removed += self.tree.remove_tree(parent, name)

    def sync_entry(
        self, path: bytes, parent: int, name: bytes, st: os.stat_result, cur: Quick | None, window: Window
    ) -> None:
        kind = kind_of(st.st_mode)
        if kind == Kind.DIR:
            if cur is not None and cur.kind != Kind.DIR:
                self.remove(parent, name)
                cur = None
            ino = self.tree.mkdir(parent, name, 0o700).ino if cur is None else cur.ino
            self.sync_dir(path, ino)
            self.sync_meta(path, ino, self.tree.stat(ino), st)
            return
        self.stats.files += 1
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            target = self.links[key]
            if cur is None or cur.ino != target:
                if cur is not None:
                    self.remove(parent, name)
                self.tree.link(target, parent, name)
                # link() moves ctime as link(2) does; keep the client's, for the quick check.
                self.tree.setattr(target, ctime_ns=st.st_ctime_ns)
            return
        if cur is not None and _unchanged(cur, st, kind):
            if st.st_nlink > 1:
                self.links[key] = cur.ino
            return
        if cur is not None and (cur.kind != kind or kind != Kind.FILE or cur.nlink > 1):
            self.remove(parent, name)
            cur = None
        if cur is None:
            ino = self.create(path, parent, name, st, kind, window.take(path))
        else:
            ino = cur.ino
            self.tree.set_content(ino, self.read(path, st, window.take(path)))
            self.sync_meta(path, ino, self.tree.stat(ino), st)
            self.tree.set_origin(ino, st.st_ino)
        if st.st_nlink > 1:
            self.links[key] = ino
        self.stats.changed += 1

    def create(self, path: bytes, parent: int, name: bytes, st: os.stat_result, kind: Kind, ahead: File | None) -> int:
        xattrs = ahead.xattrs if ahead is not None else read_xattrs(path)
        if kind == Kind.SYMLINK:
            return self.tree.add(parent, name, st, xattrs, target=os.readlink(path))
        if kind != Kind.FILE:
            return self.tree.add(parent, name, st, xattrs)
        return self.tree.add(parent, name, st, xattrs, content=self.read(path, st, ahead))

    def read(self, path: bytes, st: os.stat_result, ahead: File | None) -> Extents:
        if ahead is not None and len(ahead.data) == st.st_size:  # else it changed meanwhile: read it again
            extents = [(self.blobs.put(ahead.data), st.st_size)]
        else:
            fd = os.open(path, open_flags(st.st_uid))
            try:
                # lstat's size, not fstat's: what is read then matches the size and mtime recorded
                extents = chunk_fd(fd, st.st_size, self.blobs.put)
            finally:
                os.close(fd)
        self.stats.bytes_read += st.st_size
        return extents

    def sync_meta(self, path: bytes, ino: int, cur: Stat, st: os.stat_result) -> None:
        """Copy metadata that differs; an equal field is not written, so no tree goes stale."""
        changes: dict[str, int] = {}
        if cur.mode & 0o7777 != st.st_mode & 0o7777:
            changes["mode"] = st.st_mode
        if cur.uid != st.st_uid:
            changes["uid"] = st.st_uid
        if cur.gid != st.st_gid:
            changes["gid"] = st.st_gid
        if cur.mtime_ns != st.st_mtime_ns:
            changes["mtime_ns"] = st.st_mtime_ns
        if changes or cur.ctime_ns != st.st_ctime_ns:
            # atime alone is not a change: reading the source would rewrite trees.
            changes["atime_ns"] = st.st_atime_ns
            self.tree.set_xattrs(ino, read_xattrs(path))
            self.tree.setattr(ino, ctime_ns=st.st_ctime_ns, **changes)


def _to_read(st: os.stat_result, cur: Quick | None) -> bool:
    """Whether the walk will read this entry whole in one go (a new or changed small file)."""
    return (
        stat.S_ISREG(st.st_mode)
        and 0 < st.st_size <= SMALL_FILE
        and (cur is None or not _unchanged(cur, st, Kind.FILE))
        and st.st_nlink == 1
    )


def _unchanged(cur: Quick, st: os.stat_result, kind: Kind) -> bool:
    return (
        cur.kind == kind
        and cur.size == st.st_size
        and cur.mtime_ns == st.st_mtime_ns
        and cur.ctime_ns == st.st_ctime_ns
        and cur.origin == st.st_ino
        and (kind not in (Kind.CHR, Kind.BLK) or cur.rdev == st.st_rdev)
    )


def backup(
    tree: WorkingTree,
    blobs: BlobStore,
    path: str | bytes,
    progress: Progress | None = None,
) -> BackupStats:
    """Make the working tree equal to the local tree at `path`."""
    walker = _Walker(tree, blobs, progress)
    with blobs.inflight.session():  # chunks are referenced from the tree in memory when it ends
        walker.run(os.fsencode(path).rstrip(b"/") or b"/")
    return walker.stats


def backup_and_snapshot(
    deployment: SnapshotMaker, source: str, path: str | bytes, name: str | None = None,
    progress: Progress | None = None,
) -> tuple[SnapshotInfo, BackupStats]:  # fmt: skip
    deployment.check_writable()
    stats = backup(deployment.working_tree(source), deployment.blobs, path, progress)
    return deployment.create_snapshot(source, name), stats
