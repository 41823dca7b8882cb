"""File metadata shared by working trees and snapshot trees: kinds, modes, names."""

from __future__ import annotations

import re
import stat
import struct
from enum import IntEnum

from .errors import InvalidArgument, InvalidName, NameTooLong, quoted

NAME_MAX = 255


class Kind(IntEnum):
    FILE = 1
    DIR = 2
    SYMLINK = 3
    FIFO = 4
    SOCKET = 5
    CHR = 6
    BLK = 7


_FORMAT = {
    Kind.FILE: stat.S_IFREG,
    Kind.DIR: stat.S_IFDIR,
    Kind.SYMLINK: stat.S_IFLNK,
    Kind.FIFO: stat.S_IFIFO,
    Kind.SOCKET: stat.S_IFSOCK,
    Kind.CHR: stat.S_IFCHR,
    Kind.BLK: stat.S_IFBLK,
}
_KIND = {fmt: kind for kind, fmt in _FORMAT.items()}
_FORMAT_OF_NUMBER = {int(kind): fmt for kind, fmt in _FORMAT.items()}

# Permission bits including setuid, setgid and sticky.
PERM_MASK = 0o7777


def st_mode(kind: int, mode: int) -> int:
    fmt = _FORMAT_OF_NUMBER.get(kind)  # not Kind(kind): 1.5 µs a stat
    if fmt is None:
        raise ValueError(f"{kind!r} is not a valid Kind")
    return fmt | (mode & PERM_MASK)


def kind_of(mode: int) -> Kind:
    try:
        return _KIND[stat.S_IFMT(mode)]
    except KeyError:
        raise InvalidName(f"unknown file type in mode {mode:o}") from None


def check_name(name: bytes) -> bytes:
    """A directory entry name: any bytes but `/` and NUL, at most 255 of them."""
    if not name or name in (b".", b".."):
        raise InvalidName(f"invalid name {quoted(name)}")
    if b"/" in name or b"\0" in name:
        raise InvalidName(f"a name cannot hold '/' or NUL: {quoted(name)}")
    if len(name) > NAME_MAX:
        raise NameTooLong(f"name is {len(name)} bytes, more than {NAME_MAX}")
    return name


def check_label(label: str, what: str) -> str:
    """A source or snapshot name: a valid file name that is also text."""
    try:
        check_name(label.encode("utf-8", "strict"))
    except UnicodeEncodeError:
        raise InvalidName(f"{what} name must be valid UTF-8") from None
    except InvalidName as e:
        raise type(e)(f"invalid {what} name {label!r}: {e}") from None
    if label.startswith(".") or any(c in label for c in "\n\r\t"):
        raise InvalidName(f"invalid {what} name {label!r}: no leading dot or control characters")
    return label


# A source's name is a path segment in URLs (the share, the API), an rsync
# module, a Samba share and an argument to stock tools: ASCII letters, digits,
# `.`, `_` and `-` mean the same in all of them, decoded once or not at all.
# `:` `/` `%` `\` `?` `#` `;`, spaces and controls would each mean something
# else somewhere, and a leading `-` reads as an option.
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_source_name(name: str) -> str:
    """A new source's name: a label made only of characters no client or URL reads differently."""
    check_label(name, "source")
    if not _SOURCE_NAME.fullmatch(name):
        raise InvalidName(
            f"invalid source name {quoted(name)}: use ASCII letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


ACL_ACCESS = b"system.posix_acl_access"
_ACL_HEAD = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")
_ACL_USER_OBJ, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x04, 0x10, 0x20


def acl_mode(acl: bytes, mode: int) -> int:
    """The mode bits an access ACL implies, as the kernel sets them on a real file system.

    Owner bits come from the owner entry, group bits from the mask entry if
    there is one (else the group entry), other bits from the other entry.
    """
    if len(acl) < _ACL_HEAD.size or (len(acl) - _ACL_HEAD.size) % _ACL_ENTRY.size:
        raise InvalidArgument("malformed POSIX ACL")
    perms: dict[int, int] = {}
    for tag, perm, _id in _ACL_ENTRY.iter_unpack(acl[_ACL_HEAD.size :]):
        perms[tag] = perm & 0o7
    group = perms.get(_ACL_MASK, perms.get(_ACL_GROUP_OBJ, (mode >> 3) & 0o7))
    owner = perms.get(_ACL_USER_OBJ, (mode >> 6) & 0o7)
    other = perms.get(_ACL_OTHER, mode & 0o7)
    return (mode & 0o7000) | owner << 6 | group << 3 | other


class Stat:
    """The attributes of a file as a stat() call returns them. Immutable."""

    __slots__ = (
        "atime_ns",
        "blocks",
        "ctime_ns",
        "gid",
        "ino",
        "mode",
        "mtime_ns",
        "nlink",
        "rdev",
        "size",
        "uid",
    )  # fmt: skip

    def __init__(
        self, ino: int, mode: int, nlink: int, uid: int, gid: int, rdev: int, size: int,
        blocks: int, atime_ns: int, mtime_ns: int, ctime_ns: int,
    ):  # fmt: skip
        self.ino = ino
        self.mode = mode
        self.nlink = nlink
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        self.size = size
        self.blocks = blocks
        self.atime_ns = atime_ns
        self.mtime_ns = mtime_ns
        self.ctime_ns = ctime_ns

    @property
    def kind(self) -> Kind:
        return kind_of(self.mode)

    def renumbered(self, ino: int) -> Stat:
        """The same attributes under another inode number (the mount's numbering)."""
        return Stat(
            ino, self.mode, self.nlink, self.uid, self.gid, self.rdev, self.size,
            self.blocks, self.atime_ns, self.mtime_ns, self.ctime_ns,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"Stat(ino={self.ino}, mode={self.mode:o}, size={self.size})"
