"""The floor for mount_bench: a pyfuse3 file system on trio that keeps names and attributes and drops bytes.

Reads return zeros up to the size written.

What a FUSE mount in Python costs before it does any work: the same
kernel requests as `cairn mount` gets, answered from two dictionaries.
Run: python bench/nullfs.py MOUNTPOINT (unmounts on SIGTERM/SIGINT).
"""

from __future__ import annotations

import errno
import signal
import stat
import sys
import time
from typing import Any

import pyfuse3
import trio

TIMEOUT = 60.0  # as long as cairn's names; attributes never change behind its back


class NullFS(pyfuse3.Operations):
    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[int, dict[str, int]] = {pyfuse3.ROOT_INODE: self._fresh(stat.S_IFDIR | 0o755)}
        self.children: dict[int, dict[bytes, int]] = {pyfuse3.ROOT_INODE: {}}
        self.next_ino = pyfuse3.ROOT_INODE + 1

    @staticmethod
    def _fresh(mode: int) -> dict[str, int]:
        return {"mode": mode, "size": 0, "uid": 0, "gid": 0, "mtime": time.time_ns()}

    def _entry(self, ino: int) -> pyfuse3.EntryAttributes:
        d, a = self.attrs[ino], pyfuse3.EntryAttributes()
        a.st_ino, a.entry_timeout, a.attr_timeout = ino, TIMEOUT, TIMEOUT
        a.st_mode, a.st_nlink, a.st_uid, a.st_gid, a.st_size = d["mode"], 1, d["uid"], d["gid"], d["size"]
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = d["mtime"]
        a.st_blksize, a.st_blocks = 4096, 0
        return a

    def _add(self, parent: int, name: bytes, mode: int) -> int:
        ino, self.next_ino = self.next_ino, self.next_ino + 1
        self.attrs[ino] = self._fresh(mode)
        self.children[parent][name] = ino
        return ino

    async def lookup(self, parent: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        ino = self.children[parent].get(name)
        if ino is None:
            missing = pyfuse3.EntryAttributes()
            missing.st_ino, missing.entry_timeout = 0, TIMEOUT
            return missing
        return self._entry(ino)

    async def getattr(self, ino: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(ino)

    async def setattr(self, ino: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> pyfuse3.EntryAttributes:
        d = self.attrs[ino]
        if fields.update_mode:
            d["mode"] = stat.S_IFMT(d["mode"]) | stat.S_IMODE(attr.st_mode)
        for field, key, value in (
            ("update_size", "size", attr.st_size),
            ("update_uid", "uid", attr.st_uid),
            ("update_gid", "gid", attr.st_gid),
            ("update_mtime", "mtime", attr.st_mtime_ns),
        ):
            if getattr(fields, field):
                d[key] = value
        return self._entry(ino)

    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        ino = self._add(parent, name, stat.S_IFDIR | mode)
        self.children[ino] = {}
        return self._entry(ino)

    async def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Any) -> tuple[Any, Any]:
        ino = self._add(parent, name, mode)
        return pyfuse3.FileInfo(fh=ino), self._entry(ino)

    async def open(self, ino: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=ino)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self.attrs[fh]["size"] = max(self.attrs[fh]["size"], off + len(buf))
        return len(buf)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return bytes(max(0, min(size, self.attrs[fh]["size"] - off)))  # zeros: the bytes were dropped

    async def release(self, fh: int) -> None:
        return None

    async def rename(self, p_old: int, n_old: bytes, p_new: int, n_new: bytes, flags: int, ctx: Any) -> None:
        self.children[p_new][n_new] = self.children[p_old].pop(n_old)

    async def getxattr(self, ino: int, name: bytes, ctx: Any) -> bytes:
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    async def opendir(self, ino: int, ctx: Any) -> int:
        if ino not in self.children:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return ino

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        names = list(self.children[fh].items())
        for i in range(start_id, len(names)):
            if not pyfuse3.readdir_reply(token, names[i][0], self._entry(names[i][1]), i + 1):
                break


async def serve() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pyfuse3.main)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


def main() -> None:
    pyfuse3.init(NullFS(), sys.argv[1], set(pyfuse3.default_options) | {"fsname=nullfs"})
    try:
        trio.run(serve)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
