"""The in-memory inode of a working tree, and its catalog row."""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..content import Extents, pack_extents, unpack_extents
from ..ids import HOLE
from ..meta import Kind, Stat, st_mode

if TYPE_CHECKING:
    from .spool import SpoolFile

_XATTR_HEAD = struct.Struct("<HI")
ROOT = 1  # the root directory's inode number
# Looking up an enum member costs about 170 ns on Python 3.11, and a load makes an inode in about 1.3 µs.
DIR, FILE = Kind.DIR, Kind.FILE
# What most inodes hold as xattrs: one shared, unchangeable empty mapping (an empty dict is 64 bytes).
NO_XATTRS: Mapping[bytes, bytes] = MappingProxyType({})


def now_ns() -> int:
    return time.time_ns()


class Inode:
    """One file, directory or other node. Guarded by its working tree's lock."""

    __slots__ = (
        "atime_ns",
        "children",
        "content",
        "ctime_ns",
        "gid",
        "ino",
        "kind",
        "lost",
        "mode",
        "mtime_ns",
        "nlink",
        "opens",
        "origin",
        "parents",
        "rdev",
        "size",
        "spool",
        "target",
        "tree_id",
        "uid",
        "xattrs",
    )  # fmt: skip

    def __init__(self, ino: int, kind: int, mode: int, uid: int, gid: int, now_ns: int):
        self.ino = ino
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.rdev = 0
        self.size = 0
        self.atime_ns = self.mtime_ns = self.ctime_ns = now_ns
        self.nlink = 2 if kind == DIR else 1
        self.origin = 0
        self.target: bytes | None = None
        # The packed chunk list; unpacked only when needed (load time matters).
        self.content = b""
        self.xattrs: Mapping[bytes, bytes] = NO_XATTRS  # replaced whole on a change, never changed in place
        # A directory's entries once loaded (a new directory's are); None until then, and for other kinds.
        self.children: dict[bytes, int] | None = {} if kind == DIR else None
        # Inode numbers of the directories that hold a name for this inode,
        # once per name (a hard link in the same directory appears twice).
        self.parents: list[int] = []
        # A directory's tree blob id while nothing below it has changed.
        self.tree_id: bytes | None = None
        self.spool: SpoolFile | None = None
        self.opens = 0
        # Why the file's last writes reached neither the pool nor the spool (its
        # content is then unknown: reads fail, and a snapshot is refused) until
        # the file is truncated to nothing, given new content or removed.
        self.lost: str | None = None

    @property
    def extents(self) -> Extents:
        return unpack_extents(self.content)

    @extents.setter
    def extents(self, value: Extents) -> None:
        self.content = pack_extents(value)

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR

    def stat(self) -> Stat:
        blocks = (self.stored_bytes() + 511) // 512
        return Stat(
            self.ino, st_mode(self.kind, self.mode), self.nlink, self.uid, self.gid, self.rdev,
            self.size, blocks, self.atime_ns, self.mtime_ns, self.ctime_ns,
        )  # fmt: skip

    def stored_bytes(self) -> int:
        if self.kind != FILE:
            return 0
        if self.spool is not None:
            return self.spool.allocated()
        if HOLE not in self.content:  # a C-speed scan; most files have no holes
            return self.size
        return sum(n for i, n in self.extents if i != HOLE)

    def to_row(self, source_id: int, pending: bool) -> dict[str, Any]:
        return {
            "source_id": source_id,
            "ino": self.ino,
            "kind": self.kind,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "rdev": self.rdev,
            "size": self.size,
            "atime_ns": self.atime_ns,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "nlink": self.nlink,
            "origin": _signed(self.origin),
            "target": self.target,
            "content": self.content or None,
            "xattrs": pack_xattrs(self.xattrs) if self.xattrs else None,
            "tree_id": self.tree_id,
            "pending": pending,
        }

    ROW = ("ino", "kind", "mode", "uid", "gid", "rdev", "size", "atime_ns", "mtime_ns", "ctime_ns",
           "nlink", "origin", "target", "content", "xattrs", "tree_id")  # fmt: skip

    @classmethod
    def from_row(cls, row: Any) -> Inode:
        """An inode from a tuple of the columns in ROW."""
        (ino, kind, mode, uid, gid, rdev, size, atime, mtime, ctime,
         nlink, origin, target, content, xattrs, tree_id) = row[:16]  # fmt: skip
        inode = cls(ino, kind, mode, uid, gid, 0)
        inode.rdev = rdev
        inode.size = size
        inode.atime_ns, inode.mtime_ns, inode.ctime_ns = atime, mtime, ctime
        inode.nlink = nlink
        inode.origin = origin & 0xFFFFFFFFFFFFFFFF
        inode.target = bytes(target) if target is not None else None
        inode.content = bytes(content) if content else b""
        inode.xattrs = unpack_xattrs(xattrs) if xattrs else NO_XATTRS
        inode.children = None  # loaded when used
        inode.tree_id = bytes(tree_id) if tree_id is not None else None
        return inode


def _signed(value: int) -> int:
    # Client inode numbers are u64; the column is a signed BIGINT.
    return value - (1 << 64) if value >= 1 << 63 else value


def pack_xattrs(xattrs: Mapping[bytes, bytes]) -> bytes:
    out = bytearray()
    for k, v in sorted(xattrs.items()):
        out += _XATTR_HEAD.pack(len(k), len(v)) + k + v
    return bytes(out)


def unpack_xattrs(data: bytes | None) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    pos = 0
    data = data or b""
    while pos < len(data):
        kn, vn = _XATTR_HEAD.unpack_from(data, pos)
        pos += _XATTR_HEAD.size
        out[bytes(data[pos : pos + kn])] = bytes(data[pos + kn : pos + kn + vn])
        pos += kn + vn
    return out
