"""The mount's writes: the working tree takes file operations; `mkdir` and
`rmdir` at the root add and remove sources, and in `snapshots/` take and
delete snapshots; `images/` takes creating, writing, truncating and
removing writable images. Everything else is read-only."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..errors import CrossDevice, LostWrites, NotPermitted, ReadOnly
from ..imagestore import pool_counts
from ..meta import Stat
from ..worktree import WorkingTree
from .images import ImageProvider
from .nodes import IMAGE, IMAGES_DIR, ROOT_NODE, SNAPSHOT, SNAPSHOTS_DIR, VIRTUAL, WORKING, Node, node_of
from .view import MountReader, _text, _wt

log = logging.getLogger(__name__)


class MountView(MountReader):
    """The whole mount. Thread-safe, as MountReader is."""

    def _working(self, number: int) -> tuple[Node, WorkingTree]:
        node = node_of(number)
        if node.space == WORKING:
            self.dep.check_writable()
            return node, self.tree(node.owner)
        if node.space == SNAPSHOT:
            raise ReadOnly("snapshots are read-only")
        raise NotPermitted("only current/ holds files, and images/ disk images")

    def _images(self, number: int) -> ImageProvider | None:
        """The image pool, if the node is an image or the images/ directory."""
        node = node_of(number)
        if self.images is not None and (node.space == IMAGE or (node.space == VIRTUAL and node.ino == IMAGES_DIR)):
            self.dep.check_writable()
            return self.images
        return None

    def mkdir(self, parent: int, name: bytes, mode: int, uid: int = 0, gid: int = 0) -> Stat:
        node = node_of(parent)
        if node == ROOT_NODE:
            self.dep.add_source(_text(name))
            self.forget_catalog()
            return self.lookup(parent, name)
        if node.space == 0 and node.ino == SNAPSHOTS_DIR:
            source = self.source_by_id(node.owner).name
            try:
                self.dep.create_snapshot(source, _text(name))
            except LostWrites as e:  # mkdir can only say EIO: the log says which files
                log.warning("snapshot %s of %s: %s", _text(name), source, e)
                raise
            self.forget_catalog()
            return self.lookup(parent, name)
        node, tree = self._working(parent)
        return _wt(node.owner, tree.mkdir(node.ino, name, mode, uid, gid))

    def rmdir(self, parent: int, name: bytes) -> None:
        node = node_of(parent)
        if node == ROOT_NODE:
            self.dep.remove_source(_text(name))
            self.forget_catalog()
            return
        if node.space == 0 and node.ino == SNAPSHOTS_DIR:
            self.dep.delete_snapshot(self.source_by_id(node.owner).name, _text(name))
            self.forget_catalog()
            return
        node, tree = self._working(parent)
        tree.rmdir(node.ino, name)

    def create(self, parent: int, name: bytes, mode: int, uid: int = 0, gid: int = 0) -> Stat:
        images = self._images(parent)
        if images is not None:
            return images.create(self.source_by_id(node_of(parent).owner), name, mode)
        node, tree = self._working(parent)
        stat = tree.create(node.ino, name, mode, uid, gid)
        tree.open(stat.ino)
        return _wt(node.owner, stat)

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, uid: int = 0, gid: int = 0) -> Stat:
        node, tree = self._working(parent)
        return _wt(node.owner, tree.mknod(node.ino, name, mode, rdev, uid, gid))

    def symlink(self, parent: int, name: bytes, target: bytes, uid: int = 0, gid: int = 0) -> Stat:
        node, tree = self._working(parent)
        return _wt(node.owner, tree.symlink(node.ino, name, target, uid, gid))

    def link(self, number: int, parent: int, name: bytes) -> Stat:
        node, tree = self._working(number)
        new_parent, _ = self._working(parent)
        if new_parent.owner != node.owner:
            raise CrossDevice("hard links stay within one source")
        return _wt(node.owner, tree.link(node.ino, new_parent.ino, name))

    def unlink(self, parent: int, name: bytes) -> None:
        images = self._images(parent)
        if images is not None:
            images.unlink(self.source_by_id(node_of(parent).owner), name)
            return
        node, tree = self._working(parent)
        tree.unlink(node.ino, name)

    def rename(self, old_parent: int, old: bytes, new_parent: int, new: bytes, flags: int = 0) -> None:
        a, tree = self._working(old_parent)
        b, _ = self._working(new_parent)
        if a.owner != b.owner:
            raise CrossDevice("files move between sources by copy, not rename")
        tree.rename(a.ino, old, b.ino, new, flags)

    def setattr(self, number: int, **changes: int | None) -> Stat:
        images = self._images(number)
        if images is not None and node_of(number).space == IMAGE:
            size = changes.get("size")
            return images.getattr(number) if size is None else images.truncate(number, size)
        node, tree = self._working(number)
        return _wt(node.owner, tree.setattr(node.ino, **changes))

    def setxattr(self, number: int, name: bytes, value: bytes) -> None:
        node, tree = self._working(number)
        tree.setxattr(node.ino, name, value)

    def removexattr(self, number: int, name: bytes) -> None:
        node, tree = self._working(number)
        tree.removexattr(node.ino, name)

    def xattrs(self, number: int) -> Mapping[bytes, bytes]:
        node = node_of(number)
        if node.space == WORKING:
            return self.tree(node.owner).xattrs(node.ino)
        if node.space == SNAPSHOT:
            return dict(self._entry(number).xattrs)
        return {}

    def open(self, number: int, write: bool) -> None:
        node = node_of(number)
        if node.space == WORKING:
            self.tree(node.owner).open(node.ino)
        elif node.space == IMAGE and self.images is not None:
            if write:
                self.dep.check_writable()
            self.images.open(number, write)
        elif write:
            raise ReadOnly("snapshots are read-only")

    def release(self, number: int) -> None:
        node = node_of(number)
        if node.space == WORKING:
            self.tree(node.owner).release(node.ino)
        elif node.space == IMAGE and self.images is not None:
            self.images.release(number)

    def write(self, number: int, offset: int, data: bytes) -> int:
        images = self._images(number)
        if images is not None:
            return images.write(number, offset, data)
        node, tree = self._working(number)
        return tree.write(node.ino, offset, data)

    def flush(self, number: int) -> None:
        """close(2) of a handle: a working-tree file's bytes are stored, and a lost write raises here.

        May block (chunking a spool); in memory-only mode it raises WouldBlock first.
        """
        node = node_of(number)
        if node.space == WORKING:
            self.tree(node.owner).flush(node.ino)

    def fsync(self, number: int) -> None:
        node = node_of(number)
        if node.space == WORKING:
            self.tree(node.owner).fsync(node.ino)
        elif node.space == IMAGE and self.images is not None:
            self.images.fsync(number)

    def statfs(self) -> dict[str, int]:
        """Pool usage as a file system reports it: 4 KiB blocks."""
        pools = [p for p in (self.dep.pool, self.dep.image_pool) if p is not None]
        counts = [pool_counts(self.dep.catalog, p.id) for p in pools]  # two queries a pool, not the whole report
        stored = sum(c["stored_bytes"] for c in counts) // 4096
        free = self.dep.free_bytes() // 4096
        return {"blocks": stored + free, "free": free, "files": sum(c["blobs"] for c in counts)}
