"""Reading files out of an ext2/3/4 file system inside an image version, without writing the image out.

Enough of the on-disk format to list directories and read files, symlinks
and their metadata: the superblock, group descriptors (32 or 64 bytes),
inodes, extent trees (uninitialized extents read as zeros) and the block
maps of ext2/3 (direct, indirect, double and triple indirect). Hashed
directories are read linearly: their index blocks look like empty entries.
Inline data (small files inside the inode) is refused with a clear error.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engine.errors import CairnError, InvalidArgument, NotADirectory, NotFound

SUPER_MAGIC = 0xEF53
EXTENT_MAGIC = 0xF30A
INCOMPAT_64BIT = 0x80
FLAG_EXTENTS, FLAG_INLINE_DATA = 0x80000, 0x10000000
S_IFMT, S_IFDIR, S_IFREG, S_IFLNK = 0o170000, 0o040000, 0o100000, 0o120000
ROOT_INO = 2
Read = Callable[[int, int], bytes]


class NotExt(CairnError):
    """The image holds no ext2/3/4 file system, or a damaged one."""


@dataclass(frozen=True)
class Inode:
    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    links: int
    flags: int
    block: bytes  # i_block: 60 bytes of extent tree, block numbers or a short symlink
    blocks512: int

    @property
    def is_dir(self) -> bool:
        return self.mode & S_IFMT == S_IFDIR

    @property
    def is_symlink(self) -> bool:
        return self.mode & S_IFMT == S_IFLNK


@dataclass(frozen=True)
class DirEntry:
    name: bytes
    inode: Inode


class ExtFS:
    """One ext2/3/4 file system, read through `read(offset, size)`. Immutable, so thread-safe."""

    def __init__(self, read: Read):
        self.read = read
        sb = read(1024, 1024)
        if len(sb) < 1024 or struct.unpack_from("<H", sb, 56)[0] != SUPER_MAGIC:
            raise NotExt("no ext2/3/4 file system in this image (its superblock lacks the magic number)")
        self.block_size = 1024 << struct.unpack_from("<I", sb, 24)[0]
        self.inodes_per_group = struct.unpack_from("<I", sb, 40)[0]
        rev = struct.unpack_from("<I", sb, 76)[0]
        self.inode_size = struct.unpack_from("<H", sb, 88)[0] if rev >= 1 else 128
        incompat = struct.unpack_from("<I", sb, 96)[0]
        self.desc_size = struct.unpack_from("<H", sb, 254)[0] if incompat & INCOMPAT_64BIT else 32
        self.first_data_block = struct.unpack_from("<I", sb, 20)[0]
        if self.block_size > 65536 or not self.inodes_per_group or self.desc_size < 32:
            raise NotExt("the ext superblock is damaged")

    def _block(self, number: int, count: int = 1) -> bytes:
        return self.read(number * self.block_size, count * self.block_size)

    def inode(self, ino: int) -> Inode:
        if ino < 1:
            raise NotExt(f"inode number {ino} is invalid")
        group, index = divmod(ino - 1, self.inodes_per_group)
        desc_at = (self.first_data_block + 1) * self.block_size + group * self.desc_size
        desc = self.read(desc_at, self.desc_size)
        table = struct.unpack_from("<I", desc, 8)[0]
        if self.desc_size >= 64:
            table |= struct.unpack_from("<I", desc, 0x28)[0] << 32
        raw = self.read(table * self.block_size + index * self.inode_size, 128)
        mode, uid, size_lo, _a, _c, mtime, _d, gid, links, blocks_lo, flags = struct.unpack_from("<HHIIIIIHHII", raw)
        size_hi = struct.unpack_from("<I", raw, 108)[0]
        blocks_hi, _acl, uid_hi, gid_hi = struct.unpack_from("<HHHH", raw, 116)
        return Inode(
            ino, mode, uid | uid_hi << 16, gid | gid_hi << 16, size_lo | size_hi << 32, mtime, links, flags,
            raw[40:100], blocks_lo | blocks_hi << 32,
        )  # fmt: skip

    # -- file content --------------------------------------------------------

    def extents(self, inode: Inode) -> Iterator[tuple[int, int, int | None]]:
        """(logical block, count, physical block or None for zeros), in logical order."""
        if inode.flags & FLAG_INLINE_DATA:
            raise InvalidArgument(f"inode {inode.ino} keeps its data inline, which this reader does not handle")
        if inode.flags & FLAG_EXTENTS:
            yield from self._extent_node(inode.block, inode.ino)
        else:
            yield from self._mapped(inode)

    def _extent_node(self, node: bytes, ino: int) -> Iterator[tuple[int, int, int | None]]:
        magic, entries, _max, depth = struct.unpack_from("<HHHH", node)
        if magic != EXTENT_MAGIC or 12 + entries * 12 > len(node):
            raise NotExt(f"inode {ino} has a damaged extent tree")
        for i in range(entries):
            at = 12 + 12 * i
            if depth == 0:
                logical, length, start_hi, start_lo = struct.unpack_from("<IHHI", node, at)
                uninit = length > 32768
                yield logical, length - 32768 if uninit else length, None if uninit else start_hi << 32 | start_lo
            else:
                _logical, leaf_lo, leaf_hi = struct.unpack_from("<IIH", node, at)
                yield from self._extent_node(self._block(leaf_hi << 32 | leaf_lo), ino)

    def _mapped(self, inode: Inode) -> Iterator[tuple[int, int, int | None]]:
        """ext2/3 block maps: 12 direct blocks, then single, double and triple indirect blocks."""
        pointers = struct.unpack("<15I", inode.block)
        per = self.block_size // 4
        logical = 0
        for p in pointers[:12]:
            if p:
                yield logical, 1, p
            logical += 1
        for level, p in enumerate(pointers[12:], start=1):
            yield from self._indirect(p, level, logical)
            logical += per**level

    def _indirect(self, block: int, level: int, logical: int) -> Iterator[tuple[int, int, int | None]]:
        if not block:
            return
        per = self.block_size // 4
        pointers = struct.unpack(f"<{per}I", self._block(block))
        span = per ** (level - 1)
        for i, p in enumerate(pointers):
            if p and level == 1:
                yield logical + i, 1, p
            elif p:
                yield from self._indirect(p, level - 1, logical + i * span)

    def content(self, inode: Inode) -> Iterator[bytes]:
        """A file's bytes, in pieces of at most 1 MiB; holes read as zeros."""
        bs, size = self.block_size, inode.size
        pos = 0  # bytes produced so far
        for logical, count, physical in self.extents(inode):
            start = logical * bs
            if start >= size:
                break
            if start > pos:
                yield from _zeros(start - pos)
                pos = start
            for off in range(0, count, 256):  # 256 blocks: 1 MiB at 4 KiB
                n = min(256, count - off)
                want = min(n * bs, size - pos)
                if want <= 0:
                    break
                yield bytes(want) if physical is None else self._block(physical + off, n)[:want]
                pos += want
        if pos < size:
            yield from _zeros(size - pos)

    def readlink(self, inode: Inode) -> bytes:
        if inode.size < 60 and not inode.flags & (FLAG_EXTENTS | FLAG_INLINE_DATA):
            return inode.block[: inode.size]  # a fast symlink: the target is in i_block
        return b"".join(self.content(inode))

    # -- directories ---------------------------------------------------------

    def listdir(self, inode: Inode) -> list[DirEntry]:
        return sorted((DirEntry(name, self.inode(ino)) for name, ino in self._entries(inode)), key=lambda e: e.name)

    def _entries(self, inode: Inode) -> Iterator[tuple[bytes, int]]:
        """A directory's (name, inode number) pairs, without reading the inodes."""
        if not inode.is_dir:
            raise NotADirectory(f"inode {inode.ino} is not a directory")
        data = b"".join(self.content(inode))
        for block_at in range(0, len(data), self.block_size):
            pos, end = block_at, min(block_at + self.block_size, len(data))
            while pos + 8 <= end:
                ino, rec_len, name_len = struct.unpack_from("<IHB", data, pos)
                if rec_len < 8 or pos + rec_len > end:
                    raise NotExt(f"directory inode {inode.ino} has a damaged entry")
                name = data[pos + 8 : pos + 8 + name_len]
                if ino and name not in (b".", b".."):
                    yield name, ino
                pos += rec_len

    def lookup(self, path: str) -> Inode:
        """The inode at a path from the root ("/" or "" is the root); symlinks are not followed."""
        node = self.inode(ROOT_INO)
        for part in [p for p in path.split("/") if p]:
            if not node.is_dir:
                raise NotADirectory(f"{part!r}: a path component is not a directory")
            ino = dict(self._entries(node)).get(part.encode())  # the named entry's inode only, not its siblings'

            if ino is None:
                raise NotFound(f"no {path!r} in the image's file system")
            node = self.inode(ino)
        return node


def _zeros(n: int) -> Iterator[bytes]:
    while n > 0:
        piece = min(n, 1 << 20)
        yield bytes(piece)
        n -= piece
