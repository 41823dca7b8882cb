"""Trees: one directory listing, serialized deterministically and stored as a blob.

Format (little-endian): magic `CTR1`, u32 entry count, then entries sorted
by name. An entry is: u16 name length, name, fixed fields (kind, mode, uid,
gid, rdev, size, atime/mtime/ctime in ns, inode number, link count), u16
xattr count with (u16 name length, name, u32 value length, value) sorted by
name, then u32 payload length and payload: a file's packed chunk list, a
directory's subtree id, or a symlink's target.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .errors import CorruptBlob
from .meta import Kind, st_mode

MAGIC = b"CTR1"
_COUNT = struct.Struct("<I")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_FIXED = struct.Struct("<BIQQQQqqqQI")

Xattrs = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a snapshot directory, with everything rsync -aHAXS carries."""

    name: bytes
    kind: int
    mode: int
    uid: int
    gid: int
    rdev: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    nlink: int
    xattrs: Xattrs = field(default=())
    # A file's packed chunk list, a directory's subtree id, a symlink's target.
    payload: bytes = b""

    @property
    def st_mode(self) -> int:
        return st_mode(self.kind, self.mode)

    @property
    def is_dir(self) -> bool:
        return self.kind == Kind.DIR


def serialize(entries: list[Entry]) -> bytes:
    entries = sorted(entries, key=lambda e: e.name)
    parts = [MAGIC, _COUNT.pack(len(entries))]
    for e in entries:
        parts += (_U16.pack(len(e.name)), e.name)
        parts.append(
            _FIXED.pack(
                e.kind, e.mode, e.uid, e.gid, e.rdev, e.size,
                e.atime_ns, e.mtime_ns, e.ctime_ns, e.ino, e.nlink,
            )
        )  # fmt: skip
        parts.append(_U16.pack(len(e.xattrs)))
        for k, v in sorted(e.xattrs):
            parts += (_U16.pack(len(k)), k, _U32.pack(len(v)), v)
        parts += (_U32.pack(len(e.payload)), e.payload)
    return b"".join(parts)


def entry_bytes(data: bytes) -> dict[bytes, bytes]:
    """Each entry's serialized bytes by name, not parsed: two trees' entries compare as bytes (see `parse_entry`)."""
    try:
        return _entry_bytes(memoryview(data))
    except (struct.error, ValueError) as e:
        raise CorruptBlob(f"tree does not parse: {e}") from e


def parse_entry(raw: bytes) -> Entry:
    """One entry as `entry_bytes` gives it."""
    return deserialize(MAGIC + _COUNT.pack(1) + raw)[0]


def _entry_bytes(buf: memoryview) -> dict[bytes, bytes]:
    if bytes(buf[:4]) != MAGIC:
        raise CorruptBlob("tree has a wrong magic")
    (count,) = _COUNT.unpack_from(buf, 4)
    pos = 4 + _COUNT.size
    out = {}
    u16, u32, fixed = _U16.unpack_from, _U32.unpack_from, _FIXED.size
    for _ in range(count):
        start = pos
        (n,) = u16(buf, pos)
        name = bytes(buf[pos + 2 : pos + 2 + n])
        pos += 2 + n + fixed
        (nx,) = u16(buf, pos)
        pos += 2
        for _ in range(nx):
            (kn,) = u16(buf, pos)
            pos += 2 + kn
            (vn,) = u32(buf, pos)
            pos += 4 + vn
        (pn,) = u32(buf, pos)
        pos += 4 + pn
        out[name] = bytes(buf[start:pos])
    if pos != len(buf):
        raise CorruptBlob("tree has trailing bytes")
    return out


def deserialize(data: bytes) -> list[Entry]:
    try:
        return _deserialize(memoryview(data))
    except (struct.error, ValueError) as e:
        raise CorruptBlob(f"tree does not parse: {e}") from e


def _deserialize(buf: memoryview) -> list[Entry]:
    if bytes(buf[:4]) != MAGIC:
        raise CorruptBlob("tree has a wrong magic")
    (count,) = _COUNT.unpack_from(buf, 4)
    pos = 4 + _COUNT.size
    entries = []
    for _ in range(count):
        (n,) = _U16.unpack_from(buf, pos)
        name = bytes(buf[pos + 2 : pos + 2 + n])
        pos += 2 + n
        fixed = _FIXED.unpack_from(buf, pos)
        pos += _FIXED.size
        (nx,) = _U16.unpack_from(buf, pos)
        pos += 2
        xattrs = []
        for _ in range(nx):
            (kn,) = _U16.unpack_from(buf, pos)
            k = bytes(buf[pos + 2 : pos + 2 + kn])
            pos += 2 + kn
            (vn,) = _U32.unpack_from(buf, pos)
            xattrs.append((k, bytes(buf[pos + 4 : pos + 4 + vn])))
            pos += 4 + vn
        (pn,) = _U32.unpack_from(buf, pos)
        payload = bytes(buf[pos + 4 : pos + 4 + pn])
        pos += 4 + pn
        kind, mode, uid, gid, rdev, size, atime, mtime, ctime, ino, nlink = fixed
        entries.append(
            Entry(name, kind, mode, uid, gid, rdev, size, atime, mtime, ctime, ino, nlink, tuple(xattrs), payload)
        )
    if pos != len(buf):
        raise CorruptBlob("tree has trailing bytes")
    return entries
