"""Working-tree operations, as the FUSE and WebDAV layers will call them."""

from __future__ import annotations

import os
import stat
import struct
from typing import Any

import pytest

from engine import errors
from engine.deployment import Deployment
from engine.ingest import HOLE_MIN
from engine.worktree.tree import RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT, WorkingTree


class Forgetful:
    """A working tree that lets go of everything it can after each call: each next call loads from the catalog."""

    def __init__(self, tree: WorkingTree):
        self._tree = tree

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._tree, name)
        if not callable(attr):
            return attr

        def forgetting(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            finally:
                self._tree.commit()
                self._tree.trim(0)

        return forgetting


@pytest.fixture(params=["whole", "forgetful"])
def tree(deployment: Deployment, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    deployment.add_source("h1")
    tree = deployment.working_tree("h1")
    return tree if request.param == "whole" else Forgetful(tree)


def _write(tree, parent: int, name: bytes, data: bytes) -> int:  # type: ignore[no-untyped-def]
    ino = tree.create(parent, name, 0o644).ino
    tree.open(ino)
    tree.write(ino, 0, data)
    tree.release(ino)
    return int(ino)


def test_create_write_read(tree) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(3 << 20)
    ino = _write(tree, ROOT, b"f", data)
    assert tree.read(ino, 0, len(data) + 10) == data
    assert tree.read(ino, 1000, 10) == data[1000:1010]
    assert tree.stat(ino).size == len(data)
    assert stat.S_ISREG(tree.stat(ino).mode)


def test_random_writes_and_truncate(tree) -> None:  # type: ignore[no-untyped-def]
    base = bytearray(os.urandom(5 << 20))
    ino = _write(tree, ROOT, b"db", bytes(base))
    tree.open(ino)
    for off in (4096, 1 << 20, 3 << 20, 100):
        tree.write(ino, off, b"Z" * 5000)
        base[off : off + 5000] = b"Z" * 5000
    assert tree.read(ino, 0, len(base)) == bytes(base)  # read while open
    tree.release(ino)
    assert tree.read(ino, 0, len(base)) == bytes(base)
    tree.setattr(ino, size=1000)
    assert tree.read(ino, 0, 5000) == bytes(base[:1000])
    tree.setattr(ino, size=3000)
    assert tree.read(ino, 0, 5000) == bytes(base[:1000]) + bytes(2000)


def test_sparse_writes_keep_holes(tree) -> None:  # type: ignore[no-untyped-def]
    ino = tree.create(ROOT, b"sparse", 0o644).ino
    tree.open(ino)
    tree.write(ino, 0, b"head")
    tree.write(ino, 4 * HOLE_MIN, b"tail")
    tree.setattr(ino, size=8 * HOLE_MIN)
    tree.release(ino)
    st = tree.stat(ino)
    assert st.size == 8 * HOLE_MIN
    assert st.blocks * 512 < HOLE_MIN
    assert tree.read(ino, 4 * HOLE_MIN - 2, 8) == b"\0\0tail\0\0"


def test_directories_and_names(tree) -> None:  # type: ignore[no-untyped-def]
    d = tree.mkdir(ROOT, b"d", 0o755).ino
    odd = [b"x" * 255, b"new\nline", b"\xff\xfe not utf8", b" space "]
    for name in odd:
        tree.mknod(d, name, stat.S_IFREG | 0o600)
    assert [n for n, _ in tree.listdir(d)] == sorted(odd)
    with pytest.raises(errors.NameTooLong):
        tree.create(d, b"y" * 256, 0o644)
    with pytest.raises(errors.InvalidName):
        tree.create(d, b"a/b", 0o644)
    with pytest.raises(errors.Exists):
        tree.mkdir(d, b" space ", 0o755)
    with pytest.raises(errors.NotEmpty):
        tree.rmdir(ROOT, b"d")
    with pytest.raises(errors.NotADirectory):
        tree.rmdir(d, b" space ")
    for name in odd:
        tree.unlink(d, name)
    tree.rmdir(ROOT, b"d")
    with pytest.raises(errors.NotFound):
        tree.lookup(ROOT, b"d")
    assert tree.stat(ROOT).nlink == 2


def test_rename_over_existing_and_flags(tree) -> None:  # type: ignore[no-untyped-def]
    a = _write(tree, ROOT, b"a", b"A")
    b = _write(tree, ROOT, b"b", b"B")
    with pytest.raises(errors.Exists):
        tree.rename(ROOT, b"a", ROOT, b"b", RENAME_NOREPLACE)
    tree.rename(ROOT, b"a", ROOT, b"b", RENAME_EXCHANGE)
    assert tree.lookup(ROOT, b"a").ino == b and tree.lookup(ROOT, b"b").ino == a
    tree.rename(ROOT, b"a", ROOT, b"b")
    assert tree.lookup(ROOT, b"b").ino == b
    assert [n for n, _ in tree.listdir(ROOT)] == [b"b"]
    with pytest.raises(errors.NotFound):
        tree.stat(a)
    d = tree.mkdir(ROOT, b"d", 0o755).ino
    sub = tree.mkdir(d, b"sub", 0o755).ino
    with pytest.raises(errors.InvalidArgument):
        tree.rename(ROOT, b"d", sub, b"loop")
    with pytest.raises(errors.IsADirectory):
        tree.rename(ROOT, b"b", ROOT, b"d")
    tree.mkdir(ROOT, b"empty", 0o755)
    tree.rename(ROOT, b"d", ROOT, b"empty")
    assert tree.lookup(ROOT, b"empty").ino == d


def test_hard_links_symlinks_and_special_files(tree) -> None:  # type: ignore[no-untyped-def]
    f = _write(tree, ROOT, b"f", b"data")
    tree.link(f, ROOT, b"g")
    assert tree.stat(f).nlink == 2
    tree.unlink(ROOT, b"f")
    assert tree.read(tree.lookup(ROOT, b"g").ino, 0, 10) == b"data"
    assert tree.stat(f).nlink == 1
    s = tree.symlink(ROOT, b"s", b"/nowhere/at all").ino
    assert tree.readlink(s) == b"/nowhere/at all"
    c = tree.mknod(ROOT, b"null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert c.rdev == os.makedev(1, 3) and stat.S_ISCHR(c.mode)
    assert stat.S_ISFIFO(tree.mknod(ROOT, b"p", stat.S_IFIFO | 0o600).mode)
    assert stat.S_ISSOCK(tree.mknod(ROOT, b"sock", stat.S_IFSOCK | 0o600).mode)
    with pytest.raises(errors.IsADirectory):
        tree.link(ROOT, ROOT, b"x")


def test_setattr_and_xattrs(tree) -> None:  # type: ignore[no-untyped-def]
    f = _write(tree, ROOT, b"f", b"x")
    st = tree.setattr(f, mode=0o4755, uid=1000, gid=50, atime_ns=1, mtime_ns=123456789123456789)
    assert st.mode & 0o7777 == 0o4755 and (st.uid, st.gid) == (1000, 50)
    assert st.mtime_ns == 123456789123456789 and st.atime_ns == 1
    tree.setxattr(f, b"user.a", b"\x00\x01")
    # user::rw- user:1000:rwx group::r-- mask::rw- other::---, as setfacl writes it
    acl = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, ident)
        for tag, perm, ident in (
            (1, 6, 0xFFFFFFFF),
            (2, 7, 1000),
            (4, 4, 0xFFFFFFFF),
            (0x10, 6, 0xFFFFFFFF),
            (0x20, 0, 0xFFFFFFFF),
        )
    )
    tree.setxattr(f, b"system.posix_acl_access", acl)
    assert tree.stat(f).mode & 0o7777 == 0o4660  # the mask sets the group bits, as a kernel would
    with pytest.raises(errors.InvalidArgument):
        tree.setxattr(f, b"system.posix_acl_access", b"not an acl")
    assert tree.listxattr(f) == [b"system.posix_acl_access", b"user.a"]
    assert tree.getxattr(f, b"user.a") == b"\x00\x01"
    with pytest.raises(errors.Exists):
        tree.setxattr(f, b"user.a", b"", create=True)
    tree.removexattr(f, b"user.a")
    with pytest.raises(errors.NotFound):
        tree.getxattr(f, b"user.a")


def test_unlinked_open_file_lives_until_release(tree) -> None:  # type: ignore[no-untyped-def]
    f = _write(tree, ROOT, b"f", b"keep")
    tree.open(f)
    tree.unlink(ROOT, b"f")
    assert tree.read(f, 0, 4) == b"keep"
    tree.release(f)
    with pytest.raises(errors.NotFound):
        tree.stat(f)


def test_tree_survives_reopen(data_dir, db_url) -> None:  # type: ignore[no-untyped-def]
    with Deployment.open(data_dir, db_url) as dep:
        dep.add_source("h1")
        t = dep.working_tree("h1")
        d = t.mkdir(ROOT, b"d", 0o750).ino
        f = _write(t, d, b"\xffodd", b"content" * 1000)
        t.link(f, ROOT, b"hard")
        t.symlink(d, b"l", b"../hard")
        t.setxattr(f, b"user.k", b"v")
    with Deployment.open(data_dir, db_url) as dep:
        t = dep.working_tree("h1")
        d = t.lookup(ROOT, b"d").ino
        f = t.lookup(d, b"\xffodd").ino
        assert t.read(f, 0, 100) == (b"content" * 1000)[:100]
        assert t.lookup(ROOT, b"hard").ino == f and t.stat(f).nlink == 2
        assert t.readlink(t.lookup(d, b"l").ino) == b"../hard"
        assert t.getxattr(f, b"user.k") == b"v"
        assert t.stat(d).mode & 0o777 == 0o750


def test_second_writer_is_refused(data_dir) -> None:  # type: ignore[no-untyped-def]
    with Deployment.open(data_dir) as a:
        a.add_source("h1")
        a.working_tree("h1")
        with Deployment.open(data_dir) as b, pytest.raises(errors.InUse, match="being written"):
            b.working_tree("h1")


def test_spool_files_of_a_dead_process_are_removed(data_dir) -> None:  # type: ignore[no-untyped-def]
    dead = data_dir / "spool" / "999999999.abcd" / "1"
    dead.mkdir(parents=True)
    (dead / "5.1").write_bytes(b"lost writes")
    with Deployment.open(data_dir) as dep:
        dep.add_source("h1")
        t = dep.working_tree("h1")
        f = _write(t, ROOT, b"f", os.urandom(100_000))
        t.open(f)
        t.write(f, 10, b"random write: this one goes to the spool disk")
        assert not (data_dir / "spool" / "999999999.abcd").exists()
        assert any(dep.spool_root.rglob("*.*"))
        t.release(f)
    assert not dep.spool_root.exists()
