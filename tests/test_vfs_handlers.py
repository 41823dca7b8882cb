"""The FUSE handlers called directly, without mounting (pytest-trio)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pyfuse3
import pytest

from engine.deployment import Deployment
from engine.mount import MountView
from vfs.ops import Operations

CTX = pyfuse3.RequestContext()


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Operations]:
    dep = Deployment.open(tmp_path / "data")
    try:
        yield Operations(MountView(dep))
    finally:
        dep.close()


async def expect_errno(code: int, coro) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(pyfuse3.FUSEError) as e:
        await coro
    assert e.value.errno == code


async def listing(ops: Operations, number: int) -> list[bytes]:
    fh = await ops.opendir(number, CTX)
    names = [name for name, _ in ops._dirs[fh][1]]
    await ops.releasedir(fh)
    return names


@pytest.mark.trio
async def test_sources_current_and_snapshots(ops: Operations) -> None:
    root = await ops.getattr(pyfuse3.ROOT_INODE, CTX)
    assert stat.S_ISDIR(root.st_mode)
    source = await ops.mkdir(pyfuse3.ROOT_INODE, b"h1", 0o755, CTX)
    assert await listing(ops, pyfuse3.ROOT_INODE) == [b"h1"]
    assert await listing(ops, source.st_ino) == [b"current", b"snapshots"]
    current = await ops.lookup(source.st_ino, b"current", CTX)
    snaps = await ops.lookup(source.st_ino, b"snapshots", CTX)

    fi, attr = await ops.create(current.st_ino, b"f", 0o644, os.O_WRONLY, CTX)
    assert await ops.write(fi.fh, 0, b"hello world") == 11
    await ops.release(fi.fh)
    assert (await ops.getattr(attr.st_ino, CTX)).st_size == 11
    fi = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
    assert await ops.read(fi.fh, 6, 100) == b"world"
    await ops.release(fi.fh)

    snap = await ops.mkdir(snaps.st_ino, b"s1", 0o755, CTX)
    assert await listing(ops, snaps.st_ino) == [b"latest", b"s1"]
    latest = await ops.lookup(snaps.st_ino, b"latest", CTX)
    assert await ops.readlink(latest.st_ino, CTX) == b"s1"
    frozen = await ops.lookup(snap.st_ino, b"f", CTX)
    assert frozen.attr_timeout > 60  # snapshots cannot change: the kernel may cache them
    fi = await ops.open(frozen.st_ino, os.O_RDONLY, CTX)
    assert fi.keep_cache
    assert await ops.read(fi.fh, 0, 5) == b"hello"
    await ops.release(fi.fh)
    await ops.forget([(frozen.st_ino, 2)])
    assert frozen.st_ino not in ops.view._entries


@pytest.mark.trio
async def test_errors_are_errnos(ops: Operations) -> None:
    h1 = await ops.mkdir(pyfuse3.ROOT_INODE, b"h1", 0o755, CTX)
    h2 = await ops.mkdir(pyfuse3.ROOT_INODE, b"h2", 0o755, CTX)
    c1 = await ops.lookup(h1.st_ino, b"current", CTX)
    c2 = await ops.lookup(h2.st_ino, b"current", CTX)
    snaps = await ops.lookup(h1.st_ino, b"snapshots", CTX)
    missing = await ops.lookup(c1.st_ino, b"missing", CTX)
    assert missing.st_ino == 0  # a negative entry, not an exception
    await expect_errno(errno.ENAMETOOLONG, ops.mkdir(c1.st_ino, b"x" * 256, 0o755, CTX))
    fi, f = await ops.create(c1.st_ino, b"f", 0o644, os.O_WRONLY, CTX)
    await ops.release(fi.fh)
    await expect_errno(errno.EXDEV, ops.rename(c1.st_ino, b"f", c2.st_ino, b"f", 0, CTX))
    await expect_errno(errno.EXDEV, ops.link(f.st_ino, c2.st_ino, b"f", CTX))
    await expect_errno(errno.EPERM, ops.create(h1.st_ino, b"beside-current", 0o644, os.O_WRONLY, CTX))
    snap = await ops.mkdir(snaps.st_ino, b"s", 0o755, CTX)
    await expect_errno(errno.EEXIST, ops.mkdir(snaps.st_ino, b"s", 0o755, CTX))
    frozen = await ops.lookup(snap.st_ino, b"f", CTX)
    await expect_errno(errno.EROFS, ops.open(frozen.st_ino, os.O_WRONLY, CTX))
    await expect_errno(errno.EROFS, ops.unlink(snap.st_ino, b"f", CTX))
    await expect_errno(errno.EROFS, ops.setxattr(frozen.st_ino, b"user.x", b"1", CTX))
    await expect_errno(errno.ENOTEMPTY, ops.rmdir(pyfuse3.ROOT_INODE, b"h1", CTX))
    await expect_errno(pyfuse3.ENOATTR, ops.getxattr(frozen.st_ino, b"user.none", CTX))
    await expect_errno(errno.EINVAL, ops.mkdir(snaps.st_ino, b"bad\nname", 0o755, CTX))
    await ops.rmdir(snaps.st_ino, b"s", CTX)
    await ops.rmdir(pyfuse3.ROOT_INODE, b"h1", CTX)
    assert await listing(ops, pyfuse3.ROOT_INODE) == [b"h2"]
