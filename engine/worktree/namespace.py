"""The working tree's names: lookups, and creating, linking, renaming and removing entries.

The catalog holds the tree; memory holds the directories in use. A
directory's entries load when it is first used (`_fill`), an inode asked for
by number alone loads with the directories above it (`_fault`), and `trim`
lets the least recently used directories' entries go once their rows are
committed (residency.py). What is loaded always has its parent directories
loaded, up to the root: a change marks the trees above it stale without a
catalog read.
Every change marks rows for the next batch to the catalog.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from ..errors import (
    Exists,
    InvalidArgument,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    Unloaded,
    quoted,
)
from ..meta import PERM_MASK, Kind, Stat, check_name, kind_of
from .inode import ROOT, Inode, now_ns
from .residency import Residency

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

F = TypeVar("F", bound=Callable[..., Any])


def changes(method: F) -> F:
    """A call that changes the tree (or holds a file open): counted while it runs, so the tree is
    never let go of in the middle of one, and refused once it was (its lease is given up)."""

    @functools.wraps(method)
    def counted(self: Namespace, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self.unloaded:
                raise Unloaded("the working tree was let go of while idle; ask again")
            self.changing += 1
            self.used_at = time.monotonic()
        try:
            return method(self, *args, **kwargs)
        finally:
            with self._lock:
                self.changing -= 1

    return counted  # type: ignore[return-value]


class Quick(NamedTuple):
    ino: int
    kind: int
    size: int
    mtime_ns: int
    ctime_ns: int
    origin: int
    nlink: int
    rdev: int


class Namespace:
    """The inode table and its names. Thread-safe.

    `_lock` guards `_inodes`, `_residency`, every Inode in it, `next_ino` and
    what awaits a commit (`dirty`, `gone`, `dirents`, `unstored`).
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._commit_lock = threading.Lock()  # one batch to the catalog at a time
        self._inodes: dict[int, Inode] = {}
        self._residency = Residency()  # which directories' entries are loaded
        self.next_ino = ROOT + 1
        self.dirty: set[int] = set()
        self.gone: set[int] = set()
        self.dirents: dict[tuple[int, bytes], int | None] = {}
        # Rows written while their blobs were pending: what each waits for (see persist.commit).
        self.unstored: dict[int, tuple[bytes, bytes | None] | None] = {}
        self.unstored_checked = -1
        self.keep = 1 << 62  # inodes a long walk (a backup) trims this tree to, when its owner sets a budget
        self.used_at = time.monotonic()  # the last change began
        self.changing = 0  # changes running now
        self.unloaded = False

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @property
    def commit_lock(self) -> threading.Lock:
        return self._commit_lock

    @property
    def inodes(self) -> dict[int, Inode]:
        """The inode table; only for code that holds `lock`."""
        return self._inodes

    def _release_spool(self, inode: Inode) -> None:
        """Drop an unused inode's spool file; the working tree overrides this."""

    def _fault(self, ino: int) -> Inode:
        """Load an inode that is not in memory, and the directories above it (lock held); NotFound if none.

        The working tree reads the catalog; a tree of memory alone has nothing more.
        """
        raise NotFound(f"no inode {ino}")

    def _fill(self, d: Inode) -> None:
        """Load a directory's entries (lock held)."""
        d.children = {}

    def _named(self, parent: int, name: bytes) -> None:
        """A name in directory `parent` appeared or went (lock held); the working tree tells its watchers."""

    # -- lookups -------------------------------------------------------------

    def _get(self, ino: int) -> Inode:
        inode = self._inodes.get(ino)
        if inode is None:
            return self._fault(ino)
        return inode

    def _dir(self, ino: int) -> Inode:
        """A directory with its entries loaded."""
        return self._listed(self._get(ino))

    def _listed(self, d: Inode) -> Inode:
        if not d.is_dir:
            raise NotADirectory(f"inode {d.ino} is not a directory")
        if d.children is None:
            self._fill(d)
            self._residency.listed(d.ino)
        else:
            self._residency.used(d.ino)
        return d

    def _child(self, parent: Inode, name: bytes) -> Inode:
        assert parent.children is not None
        ino = parent.children.get(name)
        if ino is None:
            raise NotFound(f"no entry {quoted(name)}")
        return self._inodes[ino]

    def stat(self, ino: int) -> Stat:
        with self._lock:
            return self._get(ino).stat()

    def lookup(self, parent: int, name: bytes) -> Stat:
        with self._lock:
            return self._child(self._dir(parent), name).stat()

    def listdir(self, ino: int) -> list[tuple[bytes, Stat]]:
        with self._lock:
            d = self._dir(ino)
            assert d.children is not None
            return [(n, self._inodes[i].stat()) for n, i in sorted(d.children.items())]

    def names(self, ino: int) -> list[bytes]:
        """A directory's names, sorted."""
        with self._lock:
            d = self._dir(ino)
            assert d.children is not None
            return sorted(d.children)

    def packed(self, ino: int) -> tuple[int, bytes | None]:
        """A node's kind and packed chunk list (None while open for writing)."""
        with self._lock:
            inode = self._get(ino)
            return inode.kind, None if inode.spool is not None else inode.content

    def resolve(self, path: bytes) -> int:
        """The inode at a `/`-separated path below the root (symlinks not followed)."""
        with self._lock:
            ino = ROOT
            for part in path.split(b"/"):
                if part:
                    ino = self._child(self._dir(ino), part).ino
            return ino

    def path(self, ino: int) -> bytes:
        """A path of a node (its first name), as `current/` shows it."""
        with self._lock:
            parts: list[bytes] = []
            while ino != ROOT:
                inode = self._get(ino)
                if not inode.parents:
                    break
                parent = self._dir(inode.parents[0])
                assert parent.children is not None
                parts.append(next((n for n, c in parent.children.items() if c == ino), b"?"))
                ino = parent.ino
            return b"/".join(reversed(parts))

    def readlink(self, ino: int) -> bytes:
        with self._lock:
            inode = self._get(ino)
            if inode.kind != Kind.SYMLINK or inode.target is None:
                raise InvalidArgument(f"inode {ino} is not a symlink")
            return inode.target

    # -- bookkeeping ---------------------------------------------------------

    def _touch(self, inode: Inode) -> None:
        """Record that an inode changed: its row, and the trees above it."""
        self.dirty.add(inode.ino)
        for parent in inode.parents:
            self.invalidate(parent)

    def invalidate(self, ino: int) -> None:
        """A directory's listing changed: its tree and every tree above it are stale."""
        while True:
            d = self._inodes[ino]
            self.dirty.add(ino)
            if d.tree_id is None:
                return  # a stale directory's ancestors are stale already
            d.tree_id = None
            if not d.parents:
                return
            ino = d.parents[0]

    def _add_entry(self, parent: Inode, name: bytes, inode: Inode) -> None:
        assert parent.children is not None
        parent.children[name] = inode.ino
        inode.parents.append(parent.ino)
        self.dirents[(parent.ino, name)] = inode.ino
        t = now_ns()
        parent.mtime_ns = parent.ctime_ns = t
        if inode.is_dir:
            parent.nlink += 1
        self.invalidate(parent.ino)
        self._touch(inode)
        self._named(parent.ino, name)

    def _remove_entry(self, parent: Inode, name: bytes, inode: Inode) -> None:
        assert parent.children is not None
        del parent.children[name]
        inode.parents.remove(parent.ino)
        self.dirents[(parent.ino, name)] = None
        t = now_ns()
        parent.mtime_ns = parent.ctime_ns = t
        if inode.is_dir:
            parent.nlink -= 1
        self.invalidate(parent.ino)
        self._named(parent.ino, name)

    def _new(self, kind: int, mode: int, uid: int, gid: int) -> Inode:
        inode = Inode(self.next_ino, kind, mode & PERM_MASK, uid, gid, now_ns())
        self.next_ino += 1
        self._inodes[inode.ino] = inode
        if kind == Kind.DIR:
            self._residency.listed(inode.ino)  # a new directory's entries are all in memory: none
        return inode

    def _free_if_unused(self, inode: Inode) -> None:
        if inode.parents or inode.ino == ROOT or inode.opens:
            return  # still named, or freed when the last handle is released
        self._release_spool(inode)
        del self._inodes[inode.ino]
        self._residency.forget(inode.ino)
        self.dirty.discard(inode.ino)
        self.gone.add(inode.ino)

    # -- memory --------------------------------------------------------------

    @property
    def loaded(self) -> int:
        """How many inodes are in memory."""
        return len(self._inodes)

    def trim(self, keep: int) -> int:
        """Let go of the least recently used directories' entries until `keep` inodes are loaded or no
        more can go (see residency.py); returns how many inodes went."""
        with self._lock:
            return self._residency.trim(self._inodes, self.dirty, {p for p, _ in self.dirents}, keep)

    # -- creating and removing -----------------------------------------------

    def _create(self, parent: int, name: bytes, kind: int, mode: int, uid: int, gid: int) -> Inode:
        p = self._dir(parent)
        assert p.children is not None
        if check_name(name) in p.children:
            raise Exists(f"{quoted(name)} exists")
        inode = self._new(kind, mode, uid, gid)
        self._add_entry(p, name, inode)
        return inode

    @changes
    def mkdir(self, parent: int, name: bytes, mode: int, uid: int = 0, gid: int = 0) -> Stat:
        with self._lock:
            return self._create(parent, name, Kind.DIR, mode, uid, gid).stat()

    @changes
    def mknod(self, parent: int, name: bytes, st_mode: int, rdev: int = 0, uid: int = 0, gid: int = 0) -> Stat:
        """Any non-directory, non-symlink node: regular file, fifo, socket, device."""
        kind = kind_of(st_mode)
        if kind in (Kind.DIR, Kind.SYMLINK):
            raise InvalidArgument("mknod makes files, fifos, sockets and devices")
        with self._lock:
            inode = self._create(parent, name, kind, st_mode, uid, gid)
            if kind in (Kind.CHR, Kind.BLK):
                inode.rdev = rdev
            return inode.stat()

    @changes
    def create(self, parent: int, name: bytes, mode: int, uid: int = 0, gid: int = 0) -> Stat:
        with self._lock:
            return self._create(parent, name, Kind.FILE, mode, uid, gid).stat()

    @changes
    def symlink(self, parent: int, name: bytes, target: bytes, uid: int = 0, gid: int = 0) -> Stat:
        if not target or b"\0" in target or len(target) > 4095:
            raise InvalidArgument("a symlink target is 1 to 4095 bytes without NUL")
        with self._lock:
            inode = self._create(parent, name, Kind.SYMLINK, 0o777, uid, gid)
            inode.target = target
            inode.size = len(target)
            return inode.stat()

    @changes
    def link(self, ino: int, parent: int, name: bytes) -> Stat:
        with self._lock:
            inode = self._get(ino)
            if inode.is_dir:
                raise IsADirectory("cannot hard-link a directory")
            p = self._dir(parent)
            assert p.children is not None
            if check_name(name) in p.children:
                raise Exists(f"{quoted(name)} exists")
            inode.nlink += 1
            inode.ctime_ns = now_ns()
            self._add_entry(p, name, inode)
            return inode.stat()

    @changes
    def unlink(self, parent: int, name: bytes) -> None:
        with self._lock:
            p = self._dir(parent)
            inode = self._child(p, name)
            if inode.is_dir:
                raise IsADirectory(f"{quoted(name)} is a directory")
            self._remove_entry(p, name, inode)
            inode.nlink -= 1
            inode.ctime_ns = now_ns()
            self._touch(inode)
            self._free_if_unused(inode)

    @changes
    def rmdir(self, parent: int, name: bytes) -> None:
        with self._lock:
            p = self._dir(parent)
            inode = self._child(p, name)
            if not inode.is_dir:
                raise NotADirectory(f"{quoted(name)} is not a directory")
            if self._dir(inode.ino).children:
                raise NotEmpty(f"{quoted(name)} is not empty")
            self._remove_entry(p, name, inode)
            self._free_if_unused(inode)

    @changes
    def remove_tree(self, parent: int, name: bytes) -> int:
        """Remove an entry, a directory with everything below it; returns how many entries went.

        The lock is taken per entry, not for the whole walk: the FUSE loop waits on it.
        """
        with self._lock:
            inode = self._child(self._dir(parent), name)
            names = self.names(inode.ino) if inode.is_dir else []
        if not inode.is_dir:
            self.unlink(parent, name)
            return 1
        removed = sum(self.remove_tree(inode.ino, child) for child in names)
        self.rmdir(parent, name)
        return removed + 1

    @changes
    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int = 0) -> None:
        with self._lock:
            op, np = self._dir(old_parent), self._dir(new_parent)
            assert op.children is not None and np.children is not None
            inode = self._child(op, old_name)
            check_name(new_name)
            if inode.is_dir and self._is_ancestor(inode.ino, np.ino):
                raise InvalidArgument("cannot move a directory into itself")
            target_ino = np.children.get(new_name)
            if target_ino == inode.ino:
                return  # two names of one inode: rename(2) does nothing
            if flags & RENAME_EXCHANGE:
                if target_ino is None:
                    raise NotFound(f"{quoted(new_name)} does not exist")
                self._exchange(op, old_name, np, new_name)
                return
            if target_ino is not None:
                if flags & RENAME_NOREPLACE:
                    raise Exists(f"{quoted(new_name)} exists")
                self._replace(np, new_name, self._inodes[target_ino], inode)
            self._remove_entry(op, old_name, inode)
            self._add_entry(np, new_name, inode)
            inode.ctime_ns = now_ns()

    def _replace(self, parent: Inode, name: bytes, target: Inode, moving: Inode) -> None:
        if target.is_dir != moving.is_dir:
            raise (NotADirectory if target.is_dir is False else IsADirectory)(f"cannot replace {quoted(name)}")
        if target.is_dir:
            if self._dir(target.ino).children:
                raise NotEmpty(f"{quoted(name)} is not empty")
            self._remove_entry(parent, name, target)
        else:
            self._remove_entry(parent, name, target)
            target.nlink -= 1
            target.ctime_ns = now_ns()
            self._touch(target)
        self._free_if_unused(target)

    def _exchange(self, op: Inode, on: bytes, np: Inode, nn: bytes) -> None:
        a, b = self._child(op, on), self._child(np, nn)
        if (a.is_dir and self._is_ancestor(a.ino, np.ino)) or (b.is_dir and self._is_ancestor(b.ino, op.ino)):
            raise InvalidArgument("cannot move a directory into itself")
        self._remove_entry(op, on, a)
        self._remove_entry(np, nn, b)
        self._add_entry(op, on, b)
        self._add_entry(np, nn, a)

    def _is_ancestor(self, ancestor: int, ino: int) -> bool:
        while True:
            if ino == ancestor:
                return True
            parents = self._inodes[ino].parents
            if not parents:
                return False
            ino = parents[0]

    def quick_list(self, ino: int) -> dict[bytes, Quick]:
        """What a quick check compares, for each entry of a directory (the backup fast path)."""
        with self._lock:
            d = self._dir(ino)
            assert d.children is not None
            inodes = self._inodes
            return {
                n: Quick(i, c.kind, c.size, c.mtime_ns, c.ctime_ns, c.origin, c.nlink, c.rdev)
                for n, i in d.children.items()
                for c in (inodes[i],)
            }
