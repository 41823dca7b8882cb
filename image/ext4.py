"""Reading files out of an ext2/3/4 file system inside an image version, without writing the image out.

Enough of the on-disk format to list directories and read files, symlinks
and their metadata: the superblock, group descriptors (32 or 64 bytes),
inodes, extent trees (uninitialized extents read as zeros) and the block
maps of ext2/3 (direct, indirect, double and triple indirect). Hashed
directories are read linearly: their index blocks look like empty entries.
Inline data (small files inside the inode) is refused with a clear error.
"""

from __future__ import annotations

import itertools
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
MAX_EXTENT_DEPTH = 5  # the kernel refuses deeper extent trees as corrupt
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


class _Blocks:
    """How many more blocks one file may map: no more than the file system holds, so a damaged map ends."""

    def __init__(self, left: int, ino: int):
        self.left, self.ino = left, ino

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise NotExt(f"inode {self.ino} maps more blocks than the file system holds: its block map is damaged")


class ExtFS:
    """One ext2/3/4 file system, read through `read(offset, size)`. Immutable, so thread-safe.

    The image may come from anyone who could write to it (a guest VM), so every number read from it
    is checked before it is used: reads stay inside the file system, block maps are bounded, and
    directory entries are names a caller can join onto a path. Damage raises `NotExt`.
    """

    def __init__(self, read: Read, size: int | None = None):
        self._read = read
        sb = read(1024, 1024)
        if len(sb) < 1024 or struct.unpack_from("<H", sb, 56)[0] != SUPER_MAGIC:
            raise NotExt("no ext2/3/4 file system in this image (its superblock lacks the magic number)")
        log_block_size = struct.unpack_from("<I", sb, 24)[0]
        self.inodes_count, blocks_lo = struct.unpack_from("<II", sb, 0)
        self.first_data_block = struct.unpack_from("<I", sb, 20)[0]
        self.inodes_per_group = struct.unpack_from("<I", sb, 40)[0]
        rev = struct.unpack_from("<I", sb, 76)[0]
        self.inode_size = struct.unpack_from("<H", sb, 88)[0] if rev >= 1 else 128
        incompat = struct.unpack_from("<I", sb, 96)[0]
        wide = incompat & INCOMPAT_64BIT
        self.desc_size = struct.unpack_from("<H", sb, 254)[0] if wide else 32
        self.blocks_count = blocks_lo | (struct.unpack_from("<I", sb, 0x150)[0] << 32 if wide else 0)
        if log_block_size > 6:  # 64 KiB, the largest block ext4 knows
            raise NotExt("the ext superblock is damaged (block size)")
        self.block_size = 1024 << log_block_size
        if (
            not self.inodes_per_group or not self.inodes_count or self.blocks_count <= self.first_data_block + 1
            or not _power_of_two(self.inode_size, 128, self.block_size) or not _power_of_two(self.desc_size, 32, 1024)
        ):  # fmt: skip
            raise NotExt("the ext superblock is damaged")
        if size is not None and self.blocks_count * self.block_size > size:
            raise NotExt(
                f"the file system is damaged or cut short: it claims {self.blocks_count} blocks of "
                f"{self.block_size} bytes, the image holds {size} bytes"
            )

    def read(self, offset: int, size: int) -> bytes:
        """Bytes of the image; a short read means the file system points past the image's end."""
        data = self._read(offset, size)
        if len(data) != size:
            raise NotExt(f"the file system is damaged: it points at byte {offset}, past the end of the image")
        return data

    def _block(self, number: int, count: int = 1) -> bytes:
        if number < self.first_data_block or number + count > self.blocks_count:
            raise NotExt(f"the file system is damaged: block {number} is outside it")
        return self.read(number * self.block_size, count * self.block_size)

    def inode(self, ino: int) -> Inode:
        if not 1 <= ino <= self.inodes_count:
            raise NotExt(f"inode number {ino} is invalid: the file system is damaged")
        group, index = divmod(ino - 1, self.inodes_per_group)
        desc_at = (self.first_data_block + 1) * self.block_size + group * self.desc_size
        desc = self.read(desc_at, self.desc_size)
        table = struct.unpack_from("<I", desc, 8)[0]
        if self.desc_size >= 64:
            table |= struct.unpack_from("<I", desc, 0x28)[0] << 32
        if table >= self.blocks_count:
            raise NotExt(f"the inode table of group {group} is outside the file system: it is damaged")
        raw = self.read(table * self.block_size + index * self.inode_size, 128)
        mode, uid, size_lo, _a, _c, mtime, _d, gid, links, blocks_lo, flags = struct.unpack_from("<HHIIIIIHHII", raw)
        size_hi = struct.unpack_from("<I", raw, 108)[0]
        blocks_hi, _acl, uid_hi, gid_hi = struct.unpack_from("<HHHH", raw, 116)
        if size_lo | size_hi << 32 > self.block_size << 32:  # block numbers in a file are 32 bits
            raise NotExt(f"inode {ino} is damaged: it claims {size_lo | size_hi << 32} bytes")
        return Inode(
            ino, mode, uid | uid_hi << 16, gid | gid_hi << 16, size_lo | size_hi << 32, mtime, links, flags,
            raw[40:100], blocks_lo | blocks_hi << 32,
        )  # fmt: skip

    # -- file content --------------------------------------------------------

    def extents(self, inode: Inode) -> Iterator[tuple[int, int, int | None]]:
        """(logical block, count, physical block or None for zeros), in logical order, inside the file system."""
        if inode.flags & FLAG_INLINE_DATA:
            raise InvalidArgument(f"inode {inode.ino} keeps its data inline, which this reader does not handle")
        blocks = _Blocks(self.blocks_count, inode.ino)
        if inode.flags & FLAG_EXTENTS:
            found = self._extent_node(inode.block, inode.ino, None, blocks)
        else:
            found = self._mapped(inode, blocks)
        end = 0
        for logical, count, physical in found:
            if logical < end or not count:  # out of order or overlapping: a loop in the map, or damage
                raise NotExt(f"inode {inode.ino} has a damaged block map (block {logical} out of order)")
            if physical is not None and (physical < self.first_data_block or physical + count > self.blocks_count):
                raise NotExt(f"inode {inode.ino} has a damaged block map (block {physical} is outside the file system)")
            blocks.spend(count)
            end = logical + count
            yield logical, count, physical

    def _extent_node(
        self, node: bytes, ino: int, depth_wanted: int | None, blocks: _Blocks
    ) -> Iterator[tuple[int, int, int | None]]:
        magic, entries, most, depth = struct.unpack_from("<HHHH", node)
        if (
            magic != EXTENT_MAGIC or entries > most or 12 + most * 12 > len(node) or depth > MAX_EXTENT_DEPTH
            or depth_wanted not in (None, depth)
        ):  # fmt: skip
            raise NotExt(f"inode {ino} has a damaged extent tree")
        for i in range(entries):
            at = 12 + 12 * i
            if depth == 0:
                logical, length, start_hi, start_lo = struct.unpack_from("<IHHI", node, at)
                uninit = length > 32768
                yield logical, length - 32768 if uninit else length, None if uninit else start_hi << 32 | start_lo
            else:
                _logical, leaf_lo, leaf_hi = struct.unpack_from("<IIH", node, at)
                blocks.spend(1)
                yield from self._extent_node(self._block(leaf_hi << 32 | leaf_lo), ino, depth - 1, blocks)

    def _mapped(self, inode: Inode, blocks: _Blocks) -> Iterator[tuple[int, int, int | None]]:
        """ext2/3 block maps: 12 direct blocks, then single, double and triple indirect blocks."""
        pointers = struct.unpack("<15I", inode.block)
        per = self.block_size // 4
        logical = 0
        for p in pointers[:12]:
            if p:
                yield logical, 1, p
            logical += 1
        for level, p in enumerate(pointers[12:], start=1):
            yield from self._indirect(p, level, logical, blocks)
            logical += per**level

    def _indirect(self, block: int, level: int, logical: int, blocks: _Blocks) -> Iterator[tuple[int, int, int | None]]:
        if not block:
            return
        blocks.spend(1)
        per = self.block_size // 4
        pointers = struct.unpack(f"<{per}I", self._block(block))
        span = per ** (level - 1)
        for i, p in enumerate(pointers):
            if p and level == 1:
                yield logical + i, 1, p
            elif p:
                yield from self._indirect(p, level - 1, logical + i * span, blocks)

    def pieces(self, inode: Inode) -> Iterator[tuple[int, bytes]]:
        """A file's stored bytes as (offset, bytes), at most 1 MiB each, up to its size; holes are left out."""
        bs, size = self.block_size, inode.size
        for logical, count, physical in self.extents(inode):
            start = logical * bs
            if start >= size:
                break
            if physical is None:
                continue
            for off in range(0, count, 256):  # 256 blocks: 1 MiB at 4 KiB
                at = start + off * bs
                if at >= size:
                    break
                yield at, self._block(physical + off, min(256, count - off))[: size - at]

    def content(self, inode: Inode) -> Iterator[bytes]:
        """A file's bytes, in pieces of at most 1 MiB; holes read as zeros."""
        pos = 0  # bytes produced so far
        for at, piece in self.pieces(inode):
            yield from _zeros(at - pos)
            yield piece
            pos = at + len(piece)
        yield from _zeros(inode.size - pos)

    def readlink(self, inode: Inode) -> bytes:
        if inode.size < 60 and not inode.flags & (FLAG_EXTENTS | FLAG_INLINE_DATA):
            target = inode.block[: inode.size]  # a fast symlink: the target is in i_block
        elif inode.size >= min(self.block_size, 4096):  # one block at most, and Linux's PATH_MAX
            raise NotExt(f"symlink inode {inode.ino} is damaged: its target is {inode.size} bytes long")
        else:
            target = b"".join(self.content(inode))
        if not target or b"\0" in target:
            raise NotExt(f"symlink inode {inode.ino} is damaged: its target {target!r} is no path")
        return target

    # -- directories ---------------------------------------------------------

    def listdir(self, inode: Inode) -> list[DirEntry]:
        entries = sorted((DirEntry(name, self.inode(ino)) for name, ino in self._entries(inode)), key=lambda e: e.name)
        for a, b in itertools.pairwise(entries):
            if a.name == b.name:
                raise NotExt(f"directory inode {inode.ino} is damaged: it holds the name {a.name!r} twice")
        return entries

    def _entries(self, inode: Inode) -> Iterator[tuple[bytes, int]]:
        """A directory's (name, inode number) pairs, without reading the inodes; `.` and `..` are left out."""
        if not inode.is_dir:
            raise NotADirectory(f"inode {inode.ino} is not a directory")
        bs = self.block_size
        for at, piece in self.pieces(inode):
            for block_at in range(0, len(piece), bs):
                yield from self._block_entries(inode.ino, piece[block_at : block_at + bs], at + block_at == 0)

    def _block_entries(self, ino: int, block: bytes, first: bool) -> Iterator[tuple[bytes, int]]:
        """One directory block's entries. Every name must be one a caller can join onto a path."""
        pos, count = 0, 0
        while pos + 8 <= len(block):
            child, rec_len, name_len = struct.unpack_from("<IHB", block, pos)
            if rec_len in (0, 65535) and self.block_size == 65536:
                rec_len = 65536  # how ext4 writes a whole 64 KiB block's length in 16 bits
            if rec_len < 8 or pos + rec_len > len(block) or (child and 8 + name_len > rec_len):
                raise NotExt(f"directory inode {ino} has a damaged entry")
            name = block[pos + 8 : pos + 8 + name_len]
            if child and not (first and (count, name) in ((0, b"."), (1, b".."))):
                if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
                    raise NotExt(f"directory inode {ino} has a damaged entry: the name {name!r} is no file name")
                if child > self.inodes_count:
                    raise NotExt(f"directory inode {ino} has a damaged entry: {name!r} names inode {child}")
                yield name, child
            pos += rec_len
            count += 1

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


def _power_of_two(n: int, low: int, high: int) -> bool:
    return low <= n <= high and not n & (n - 1)


def _zeros(n: int) -> Iterator[bytes]:
    while n > 0:
        piece = min(n, 1 << 20)
        yield bytes(piece)
        n -= piece
