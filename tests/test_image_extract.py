"""Files out of untrusted disk images: forged names, loops and setuid files stay harmless; the reader is fuzzed."""

from __future__ import annotations

import os
import re
import stat
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from engine.errors import InvalidArgument
from image.ext4 import ROOT_INO, ExtFS, NotExt
from image.files import extract, listing

from .test_backup_restore import cairn

PWNED = b"pwned\n"


def run(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def reader(data: bytes | bytearray) -> Callable[[int, int], bytes]:
    return lambda offset, size: bytes(data[offset : offset + size])


def open_image(img: Path) -> ExtFS:
    data = img.read_bytes()
    return ExtFS(reader(data), len(data))


def forge(img: Path, placeholder: bytes, name: bytes) -> None:
    """Rename the one directory entry called `placeholder` to `name` (as long, or b"" for an empty name) in place."""
    data = bytearray(img.read_bytes())
    header = re.escape(bytes([len(placeholder)])) + b"[\x01-\x07]"  # name_len, then the file type byte
    found = [m.start() for m in re.finditer(header + re.escape(placeholder), data)]
    assert len(found) == 1, f"{placeholder!r} is in the image {len(found)} times"
    at = found[0]
    if name:
        assert len(name) == len(placeholder)
        data[at + 2 : at + 2 + len(name)] = name
    else:
        data[at] = 0
    img.write_bytes(bytes(data))


def make_image(tmp_path: Path, build: Callable[[Path], None], *mkfs: str) -> Path:
    src = tmp_path / "src"
    src.mkdir(parents=True)
    build(src)
    img = tmp_path / "disk.raw"
    run("mkfs.ext4", "-q", *mkfs, "-d", str(src), str(img), "4M")
    return img


def nothing_escaped(tmp_path: Path) -> None:
    assert os.listdir(tmp_path / "outside") == []
    assert not (tmp_path / "escape").exists()


def forged_names(tmp_path: Path) -> list[bytes]:
    absolute = str(tmp_path / "outside" / "abs").encode()
    return [b"../../escape", b"s/pwned", absolute, b".", b"..", b"x\0y", b""]


@pytest.mark.parametrize("case", range(7))
def test_forged_names_are_refused_and_nothing_leaves_dest(tmp_path: Path, case: int) -> None:
    """`..`, `/` (through a symlink of the image's), absolute, `.`, NUL and empty names: corrupt, refused."""
    (tmp_path / "outside").mkdir()
    name = forged_names(tmp_path)[case]
    placeholder = b"P" * len(name) if name else b"PLACEHOLDER"

    def build(src: Path) -> None:
        (src / "d").mkdir()
        os.symlink(tmp_path / "outside", src / "d" / "s")  # an absolute symlink out of the tree, as a guest may make
        (src / "d" / os.fsdecode(placeholder)).write_bytes(PWNED)
        (src / "d" / "ok.txt").write_text("fine\n")

    img = make_image(tmp_path, build)
    forge(img, placeholder, name)
    fs = open_image(img)
    with pytest.raises(NotExt, match="name"):
        fs.listdir(fs.lookup("d"))
    with pytest.raises(NotExt, match="name"):
        extract(fs, "/", tmp_path / "out")
    nothing_escaped(tmp_path)


def test_duplicate_names_and_directory_loops_are_refused(tmp_path: Path) -> None:
    """A directory named like a symlink beside it, and a directory that holds its own ancestor."""
    (tmp_path / "outside").mkdir()

    def build(src: Path) -> None:
        os.symlink(tmp_path / "outside", src / "ab")
        (src / "ac").mkdir()
        (src / "ac" / "f").write_bytes(PWNED)
        (src / "loop").mkdir()

    img = make_image(tmp_path, build)
    forge(img, b"ac", b"ab")
    fs = open_image(img)
    with pytest.raises(NotExt, match="twice"):
        extract(fs, "/", tmp_path / "out")
    nothing_escaped(tmp_path)

    img = make_image(tmp_path / "second", lambda src: (src / "loop" / "deeper").mkdir(parents=True))
    run("debugfs", "-w", "-R", "ln / loop/deeper/up", str(img))  # a hard link to the root directory
    with pytest.raises(NotExt, match="twice"):
        extract(open_image(img), "/", tmp_path / "out2")


def test_cli_get_refuses_escapes_and_drops_setuid(tmp_path: Path) -> None:
    """`cairn image get` of a guest's image: a name with `/` is an error, a setuid-root file comes out plain."""
    (tmp_path / "outside").mkdir()

    def build(src: Path) -> None:
        (src / "d").mkdir()
        os.symlink(tmp_path / "outside", src / "d" / "s")
        (src / "d" / "QQQQQQQ").write_bytes(PWNED)
        (src / "su").write_bytes(b"#!/bin/sh\nid\n")
        (src / "su").chmod(0o4755)
        (src / "shared").mkdir()
        (src / "shared").chmod(0o2775)

    img = make_image(tmp_path, build)
    run("debugfs", "-w", "-R", "sif su uid 0", str(img))
    assert "Mode:  04755" in run("debugfs", "-R", "stat su", str(img))
    forge(img, b"QQQQQQQ", b"s/pwned")  # last: debugfs checks the directory's checksum, this reader does not
    data = tmp_path / "data"
    cairn(data, "image", "push", "h1", "vm", str(img), "--snapshot", "one")

    refused = cairn(data, "image", "get", "h1", "vm@one", "/", str(tmp_path / "out"), check=False)
    assert refused.returncode == 1 and "damaged" in refused.stderr and "Traceback" not in refused.stderr
    nothing_escaped(tmp_path)

    cairn(data, "image", "get", "h1", "vm@one", "su", str(tmp_path / "su"))
    assert stat.S_IMODE((tmp_path / "su").stat().st_mode) == 0o755
    cairn(data, "image", "get", "h1", "vm@one", "shared", str(tmp_path / "shared"))
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o775
    piped = cairn(data, "image", "get", "h1", "vm@one", "shared", "-", check=False)  # not its raw entries
    assert piped.returncode == 1 and "is a directory" in piped.stderr and not piped.stdout


# -- fuzzing: mutated metadata of small real images -------------------------------------------------


class Budget:
    """A reading function that fails the test past a fixed number of bytes: a loop in the reader shows as this."""

    def __init__(self, data: bytes, limit: int):
        self.data, self.left = data, limit

    def __call__(self, offset: int, size: int) -> bytes:
        self.left -= size
        assert self.left >= 0, "the reader read far more than the image holds"
        return self.data[offset : offset + size]


def metadata_ranges(data: bytes) -> list[tuple[int, int]]:
    """Where the metadata of a clean image is: superblock, group descriptors, used inodes, directory and map blocks."""
    fs = ExtFS(reader(data), len(data))
    bs = fs.block_size
    descriptors = (fs.first_data_block + 1) * bs
    table = struct.unpack_from("<I", data, descriptors + 8)[0]
    ranges = [(1024, 1024), (descriptors, fs.desc_size), (table * bs, 64 * fs.inode_size)]  # mkfs -d's inodes
    todo = [fs.inode(ROOT_INO)]
    while todo:
        inode = todo.pop()
        if inode.is_dir:
            ranges.extend((p * bs, n * bs) for _logical, n, p in fs.extents(inode) if p is not None)
            todo.extend(e.inode for e in fs.listdir(inode))
        elif inode.flags & 0x80000:  # ext4's extent index blocks, one level
            _magic, entries, _most, depth = struct.unpack_from("<HHHH", inode.block)
            leaves = [struct.unpack_from("<I", inode.block, 16 + 12 * i)[0] for i in range(entries)] if depth else []
            ranges.extend((p * bs, bs) for p in leaves)
        elif not inode.is_symlink:  # ext2's indirect blocks, and one level below
            indirect = [p for p in struct.unpack("<15I", inode.block)[12:] if p]
            for p in indirect[1:]:
                indirect.extend(q for q in struct.unpack_from(f"<{bs // 4}I", data, p * bs)[:4] if q)
            ranges.extend((p * bs, bs) for p in indirect)
    return ranges


def fuzz_tree(src: Path) -> None:
    (src / "etc" / "deep" / "er").mkdir(parents=True)
    (src / "etc" / "deep" / "er" / "note").write_text("a note\n")
    for i in range(40):
        (src / "etc" / f"f{i:02}").write_bytes(bytes([i]) * (i * 97))
    with open(src / "sparse", "wb") as f:
        f.seek(300_000)
        f.write(b"tail")
    (src / "big").write_bytes(os.urandom(290_000))  # ext2: single and double indirect blocks
    os.symlink("etc/deep/er/note", src / "fast")
    os.symlink("x" * 100, src / "slow")  # longer than 60 bytes: kept in a block
    for i in range(60):
        (src / f"g{i:02}").write_bytes(os.urandom(1024))


def fragment(img: Path, tmp: Path) -> bytes:
    """Free every other 1 KiB file and write one into the gaps: 40 extents, more than an inode holds."""
    (tmp / "frag").write_bytes(os.urandom(40_000))
    (tmp / "cmds").write_text("".join(f"rm g{i:02}\n" for i in range(0, 60, 2)) + f"write {tmp / 'frag'} frag\n")
    run("debugfs", "-w", "-f", str(tmp / "cmds"), str(img))
    return (tmp / "frag").read_bytes()


@pytest.fixture(scope="module")
def clean_images(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, list[tuple[int, int]]]]:
    images = []
    for kind, mkfs in (("ext4", ("-b", "1024", "-O", "^has_journal")), ("ext2", ("-t", "ext2", "-b", "1024"))):
        top = tmp_path_factory.mktemp(kind)
        img = make_image(top, fuzz_tree, *mkfs)
        frag = fragment(img, top)
        data = img.read_bytes()
        extract(ExtFS(reader(data), len(data)), "/", top / "out")  # the clean image reads back whole
        assert (top / "out" / "frag").read_bytes() == frag
        assert (top / "out" / "sparse").stat().st_blocks * 512 < 300_000  # the hole stayed a hole
        images.append((data, metadata_ranges(data)))
    return images


mutation = hs.tuples(
    hs.integers(0, 1 << 20), hs.integers(0, 1 << 20), hs.sampled_from([1, 2, 4]), hs.integers(0, 2**32 - 1)
)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=hs.integers(0, 1), mutations=hs.lists(mutation, min_size=1, max_size=6))
def test_fuzzed_images_fail_cleanly_and_stay_in_dest(
    clean_images: list[tuple[bytes, list[tuple[int, int]]]], tmp_path: Path, which: int,
    mutations: list[tuple[int, int, int, int]],
) -> None:  # fmt: skip
    clean, ranges = clean_images[which]
    data = bytearray(clean)
    for pick, offset, width, value in mutations:
        start, length = ranges[pick % len(ranges)]
        at = start + offset % max(length - width, 1)
        data[at : at + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, "little")
    box = Path(os.path.realpath(tmp_path)) / f"box{os.urandom(6).hex()}"
    box.mkdir()
    try:
        fs = ExtFS(Budget(bytes(data), 64 * len(data)), len(data))
        listing(fs, "/")
        extract(fs, "/", box / "out")
    except (NotExt, InvalidArgument):  # damaged, or inline data this reader does not handle
        pass
    assert os.listdir(box) in ([], ["out"])
    for top, dirs, files in os.walk(box / "out"):
        for name in dirs + files:
            mode = os.lstat(os.path.join(top, name)).st_mode
            assert not mode & (stat.S_ISUID | stat.S_ISGID)
