"""The in-memory inode of a working tree, and its catalog row."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ..content import Extents, pack_extents, unpack_extents
from ..ids import HOLE
from ..meta import Kind, Stat, st_mode

if TYPE_CHECKING:
    from .spool import SpoolFile

_XATTR_HEAD = struct.Struct("<HI")


class Inode:
    """One file, directory or other node. Guarded by its working tree's lock."""

    __slots__ = (
        "atime_ns",
        "children",
        "ctime_ns",
        "extents",
        "gid",
        "ino",
        "kind",
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
        self.nlink = 2 if kind == Kind.DIR else 1
        self.origin = 0
        self.target: bytes | None = None
        self.extents: Extents = []
        self.xattrs: dict[bytes, bytes] = {}
        # A directory's entries; None for other kinds.
        self.children: dict[bytes, int] | None = {} if kind == Kind.DIR else None
        # Inode numbers of the directories that hold a name for this inode,
        # once per name (a hard link in the same directory appears twice).
        self.parents: list[int] = []
        # A directory's tree blob id while nothing below it has changed.
        self.tree_id: bytes | None = None
        self.spool: SpoolFile | None = None
        self.opens = 0

    @property
    def is_dir(self) -> bool:
        return self.kind == Kind.DIR

    def stat(self) -> Stat:
        blocks = (self.stored_bytes() + 511) // 512
        return Stat(
            self.ino, st_mode(self.kind, self.mode), self.nlink, self.uid, self.gid, self.rdev,
            self.size, blocks, self.atime_ns, self.mtime_ns, self.ctime_ns,
        )  # fmt: skip

    def stored_bytes(self) -> int:
        if self.kind != Kind.FILE:
            return 0
        if self.spool is not None:
            return self.spool.allocated()
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
            "content": pack_extents(self.extents) if self.extents else None,
            "xattrs": pack_xattrs(self.xattrs) if self.xattrs else None,
            "tree_id": self.tree_id,
            "pending": pending,
        }

    @classmethod
    def from_row(cls, row: Any) -> Inode:
        inode = cls(row.ino, row.kind, row.mode, row.uid, row.gid, 0)
        inode.rdev = row.rdev
        inode.size = row.size
        inode.atime_ns, inode.mtime_ns, inode.ctime_ns = row.atime_ns, row.mtime_ns, row.ctime_ns
        inode.nlink = row.nlink
        inode.origin = row.origin & 0xFFFFFFFFFFFFFFFF
        inode.target = bytes(row.target) if row.target is not None else None
        inode.extents = unpack_extents(row.content)
        inode.xattrs = unpack_xattrs(row.xattrs)
        inode.tree_id = bytes(row.tree_id) if row.tree_id is not None else None
        return inode


def _signed(value: int) -> int:
    # Client inode numbers are u64; the column is a signed BIGINT.
    return value - (1 << 64) if value >= 1 << 63 else value


def pack_xattrs(xattrs: dict[bytes, bytes]) -> bytes:
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
