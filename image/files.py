"""File-level restore from an image version: list a path, extract a file or a directory tree."""

from __future__ import annotations

import os
import stat as st
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from engine.errors import Exists

from .disk import VersionReader
from .ext4 import ExtFS, Inode


def open_fs(reader: VersionReader) -> ExtFS:
    return ExtFS(reader.read)


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
    """Write the file, symlink or directory tree at `path` to `dest` (which must not exist)."""
    if dest.exists() or dest.is_symlink():
        raise Exists(f"{dest} exists; extract to a new path")
    stats = ExtractStats()
    _extract(fs, fs.lookup(path), dest, stats)
    return stats


def _extract(fs: ExtFS, inode: Inode, dest: Path, stats: ExtractStats) -> None:
    if inode.is_dir:
        dest.mkdir()
        for entry in fs.listdir(inode):
            _extract(fs, entry.inode, dest / os.fsdecode(entry.name), stats)
        stats.dirs += 1
    elif inode.is_symlink:
        os.symlink(fs.readlink(inode), dest)
        return
    elif inode.mode & 0o170000 == st.S_IFREG:
        with open(dest, "xb") as out:
            stats.bytes += write_file(fs, inode, out)
        stats.files += 1
    else:
        stats.skipped.append(str(dest))
        return
    os.chmod(dest, inode.mode & 0o7777)
    os.utime(dest, (inode.mtime, inode.mtime))
