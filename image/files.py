"""File-level restore from an image version: list a path, extract a file or a directory tree."""

from __future__ import annotations

import os
import stat as st
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from engine.errors import Exists, InvalidArgument

from .disk import VersionReader
from .ext4 import DirEntry, ExtFS, Inode, NotExt


def open_fs(reader: VersionReader) -> ExtFS:
    return ExtFS(reader.read, reader.size)


def row(name: bytes, inode: Inode) -> dict[str, Any]:
    return {"name": os.fsdecode(name), "mode": st.filemode(inode.mode), "uid": inode.uid, "gid": inode.gid,
            "size": inode.size, "mtime": float(inode.mtime), "inode": inode.ino}  # fmt: skip


def listing(fs: ExtFS, path: str) -> list[dict[str, Any]]:
    """The entries of a directory, or the one file a path names."""
    inode = fs.lookup(path)
    if not inode.is_dir:
        return [row(os.fsencode(path.rstrip("/").rsplit("/", 1)[-1]), inode)]
    return [row(e.name, e.inode) for e in fs.listdir(inode)]


@dataclass
class ExtractStats:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # devices, sockets, fifos: named, not made


def write_file(fs: ExtFS, inode: Inode, out: BinaryIO) -> int:
    n = 0
    for piece in fs.content(inode):
        out.write(piece)
        n += len(piece)
    return n


def extract(fs: ExtFS, path: str, dest: Path) -> ExtractStats:
    """Write the file, symlink or directory tree at `path` to `dest` (which must not exist).

    The image is untrusted (a guest VM may have written it), so nothing is ever made outside `dest`:
    every file and directory is created relative to an open directory, never through a path
    string, and never through a symlink (the image's symlinks are made, and not followed).
    Owners are not restored, so setuid and setgid bits are dropped: otherwise any file the guest
    marked setuid would run as whoever extracts it (usually root).
    """
    if dest.exists() or dest.is_symlink():
        raise Exists(f"{dest} exists; extract to a new path")
    inode = fs.lookup(path)
    stats = ExtractStats()
    parent = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the caller's own path, as given
    try:
        _Extraction(fs, stats).run(parent, os.fsencode(dest.name), inode, str(dest))
    finally:
        os.close(parent)
    return stats


FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# 2,048 levels: a path of them is already 4 KiB, Linux's PATH_MAX; each level holds one open directory.
MAX_DEPTH = 2048


@dataclass
class _Level:
    fd: int
    inode: Inode
    entries: Iterator[DirEntry]
    shown: str


class _Extraction:
    """One tree written out depth first, without recursion; each directory is finished after its entries."""

    def __init__(self, fs: ExtFS, stats: ExtractStats):
        self.fs, self.stats = fs, stats
        self.seen: set[int] = set()  # directory inodes: ext file systems never link one twice, a loop would

    def run(self, parent: int, name: bytes, inode: Inode, shown: str) -> None:
        if not inode.is_dir:
            self._leaf(parent, name, inode, shown)
            return
        stack = [self._open_dir(parent, name, inode, shown)]
        try:
            while stack:
                level = stack[-1]
                entry = next(level.entries, None)
                if entry is None:
                    stack.pop()
                    self._finish_dir(level)
                    continue
                shown = os.path.join(level.shown, os.fsdecode(entry.name))
                if not entry.inode.is_dir:
                    self._leaf(level.fd, entry.name, entry.inode, shown)
                elif len(stack) >= MAX_DEPTH:
                    raise InvalidArgument(f"{shown}: the tree is more than {MAX_DEPTH} directories deep")
                else:
                    stack.append(self._open_dir(level.fd, entry.name, entry.inode, shown))
        finally:
            for level in stack:
                os.close(level.fd)

    def _open_dir(self, parent: int, name: bytes, inode: Inode, shown: str) -> _Level:
        if inode.ino in self.seen:
            raise NotExt(f"{shown}: directory inode {inode.ino} appears twice in the tree: the file system is damaged")
        self.seen.add(inode.ino)
        entries = iter(self.fs.listdir(inode))
        os.mkdir(name, 0o700, dir_fd=parent)  # opened up once its entries are written
        return _Level(os.open(name, DIR_FLAGS, dir_fd=parent), inode, entries, shown)

    def _finish_dir(self, level: _Level) -> None:
        try:
            _set_mode_and_time(level.fd, level.inode)
        finally:
            os.close(level.fd)
        self.stats.dirs += 1

    def _leaf(self, parent: int, name: bytes, inode: Inode, shown: str) -> None:
        if inode.is_symlink:
            os.symlink(self.fs.readlink(inode), name, dir_fd=parent)
            os.utime(name, (inode.mtime, inode.mtime), dir_fd=parent, follow_symlinks=False)
        elif st.S_ISREG(inode.mode):
            fd = os.open(name, FILE_FLAGS, 0o600, dir_fd=parent)
            try:
                for at, piece in self.fs.pieces(inode):  # holes stay holes: seeks, not written zeros
                    _pwrite_all(fd, piece, at)
                os.ftruncate(fd, inode.size)
                _set_mode_and_time(fd, inode)
            finally:
                os.close(fd)
            self.stats.files += 1
            self.stats.bytes += inode.size
        else:
            self.stats.skipped.append(shown)


def _set_mode_and_time(fd: int, inode: Inode) -> None:
    os.fchmod(fd, inode.mode & 0o1777)  # without setuid and setgid: owners are not restored
    os.utime(fd, (inode.mtime, inode.mtime))


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
