"""Disk images with real tools: mkfs.ext4, debugfs, e2fsck, qemu-img over NBD, dd and rsync into the mount."""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_backup_restore import cairn, cairn_json
from .test_mount import CAIRN, Mounted, mounted  # noqa: F401 (a fixture)

MiB = 1 << 20


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=True)


def make_ext4(tmp_path: Path, size: str = "32M") -> tuple[Path, Path]:
    """An ext4 image holding a small tree, made with mkfs.ext4 -d."""
    src = tmp_path / "tree"
    (src / "etc" / "deep").mkdir(parents=True)
    rng = random.Random(1)
    (src / "etc" / "big.bin").write_bytes(rng.randbytes(3 * MiB + 77))
    (src / "etc" / "deep" / "note.txt").write_text("a note\n")
    for i in range(200):
        (src / "etc" / f"f{i:03}").write_text(f"file {i}\n" * (i + 1))
    os.symlink("etc/big.bin", src / "link")
    img = tmp_path / "disk.raw"
    run("mkfs.ext4", "-q", "-d", str(src), str(img), size)
    return img, src


class NbdExport:
    """`cairn image export ... --nbd 127.0.0.1:0`, stopped by SIGTERM."""

    def __init__(self, data: Path, *args: str):
        self.proc = subprocess.Popen(
            [*CAIRN, "--data", str(data), "image", "export", *args, "--nbd", "127.0.0.1:0", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        lines = []
        while not "".join(lines).rstrip().endswith("}"):
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"export did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
            lines.append(line)
        self.url = json.loads("".join(lines))["url"]

    def stop(self) -> None:
        self.proc.terminate()
        _out, err = self.proc.communicate(timeout=30)  # closes the pipes
        assert self.proc.returncode == 0, err


@pytest.fixture
def exports() -> Iterator[list[NbdExport]]:
    started: list[NbdExport] = []
    yield started
    for e in started:
        if e.proc.poll() is None:
            e.stop()


def test_ext4_versions_push_nbd_and_file_restore(tmp_path: Path, exports: list[NbdExport]) -> None:
    data = tmp_path / "data"
    img, src = make_ext4(tmp_path)
    original = img.read_bytes()
    first = cairn_json(data, "image", "push", "h1", "vm", str(img), "--snapshot", "one")
    assert isinstance(first, dict) and first["snapshot"] == "one"

    # A second version changed with debugfs: a file written, one removed.
    (tmp_path / "new.txt").write_bytes(b"written later\n" * 1000)
    run("debugfs", "-w", "-R", f"write {tmp_path / 'new.txt'} etc/new.txt", str(img))
    run("debugfs", "-w", "-R", "rm etc/f007", str(img))
    now = img.read_bytes()
    changed_4k = sum(original[i : i + 4096] != now[i : i + 4096] for i in range(0, len(original), 4096))
    second = cairn_json(data, "image", "push", "h1", "vm", str(img), "--snapshot", "two")
    assert isinstance(second, dict)
    assert 1 <= second["changed_blocks"] <= changed_4k  # at most one 64 KiB block per changed 4 KiB block
    assert second["new_bytes"] <= second["changed_blocks"] * 65536 + 64 * 1024  # blocks and a map node or two

    # Block-level restore of each version over NBD, compared with cmp; the file system is clean.
    for name, expected in (("vm@one", original), ("vm@two", img.read_bytes())):
        export = NbdExport(data, "h1", name)
        exports.append(export)
        out = tmp_path / f"{name}.restored"
        run("qemu-img", "convert", "-f", "raw", "-O", "raw", export.url, str(out))
        assert out.read_bytes() == expected
        run("e2fsck", "-fn", str(out))
        export.stop()
    run("cmp", str(img), str(tmp_path / "vm@two.restored"))

    # File-level restore without writing the image out.
    listed = cairn_json(data, "image", "ls", "h1", "vm@two", "etc")
    assert isinstance(listed, list)
    names = {r["name"] for r in listed}
    assert "new.txt" in names and "f007" not in names and "deep" in names
    debugfs = run("debugfs", "-R", "ls -p etc", str(img)).stdout
    assert names == {line.split("/")[5] for line in debugfs.splitlines() if line.count("/") >= 6} - {".", ".."}
    old = cairn_json(data, "image", "ls", "h1", "vm@one", "etc")
    assert isinstance(old, list) and "f007" in {r["name"] for r in old}
    cairn(data, "image", "get", "h1", "vm@two", "etc/new.txt", str(tmp_path / "got.txt"))
    assert (tmp_path / "got.txt").read_bytes() == b"written later\n" * 1000
    cairn(data, "image", "get", "h1", "vm@one", "/", str(tmp_path / "tree-out"))
    diff = subprocess.run(["diff", "-r", "--no-dereference", str(src), str(tmp_path / "tree-out")], capture_output=True)
    assert diff.stdout.decode().strip() == f"Only in {tmp_path / 'tree-out'}: lost+found"
    assert os.readlink(tmp_path / "tree-out" / "link") == "etc/big.bin"
    assert (tmp_path / "tree-out" / "etc" / "f007").stat().st_mode & 0o777 == (
        src / "etc" / "f007"
    ).stat().st_mode & 0o777
    piped = cairn(data, "image", "get", "h1", "vm@one", "etc/deep/note.txt", "-").stdout
    assert piped == "a note\n"
    missing = cairn(data, "image", "ls", "h1", "vm@one", "no/such", check=False)
    assert missing.returncode == 1 and "no 'no/such'" in missing.stderr


def test_image_files_in_the_mount(tmp_path: Path, mounted: Mounted) -> None:  # noqa: F811
    img, _src = make_ext4(tmp_path)
    images = mounted.path / "h1" / "images"
    os.mkdir(mounted.path / "h1")
    assert os.listdir(images) == []
    run("truncate", "-s", "32M", str(images / "vm.img"))
    assert (images / "vm.img").stat().st_size == 32 * MiB
    run("dd", f"if={img}", f"of={images / 'vm.img'}", "bs=1M", "conv=notrunc", "status=none")
    run("cmp", str(img), str(images / "vm.img"))
    run("qemu-img", "convert", "-O", "raw", str(img), str(images / "q.img"))
    run("cmp", str(img), str(images / "q.img"))
    os.mkdir(mounted.path / "h1" / "snapshots" / "one")
    assert sorted(os.listdir(images)) == ["q.img", "q@one.img", "vm.img", "vm@one.img"]

    # A second version by rsync's delta transfer: it writes only what differs, in place.
    run("debugfs", "-w", "-R", "rm etc/f100", str(img))
    out = run("rsync", "-I", "--stats", "--inplace", "--no-whole-file", str(img), str(images / "vm.img")).stdout
    literal = int(next(line for line in out.splitlines() if "Literal data" in line).split()[2].replace(",", ""))
    assert 0 < literal < MiB
    os.mkdir(mounted.path / "h1" / "snapshots" / "two")
    run("cmp", str(img), str(images / "vm@two.img"))
    run("e2fsck", "-fn", str(images / "vm@two.img"))
    assert b"f100" in subprocess.run(["debugfs", "-R", "ls etc", str(images / "vm@one.img")],
                                     capture_output=True).stdout  # fmt: skip

    # Odd sizes, unaligned writes, writes past the end; versions are read-only.
    with open(images / "odd.img", "wb") as f:
        f.write(b"x" * 100_001)
        f.seek(300_000)
        f.write(b"tail")
    assert (images / "odd.img").read_bytes() == b"x" * 100_001 + bytes(199_999) + b"tail"
    for bad in (lambda: os.open(images / "vm@one.img", os.O_RDWR), lambda: os.unlink(images / "vm@one.img")):
        with pytest.raises(OSError) as e:
            bad()
        assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        (images / "notes.txt").write_text("x")
    assert e.value.errno == errno.EINVAL
    os.unlink(images / "q.img")
    assert "q.img" not in os.listdir(images) and "q@one.img" in os.listdir(images)
    mounted.stop()
    listed = cairn_json(mounted.data, "image", "list", "h1")
    assert isinstance(listed, list)
    assert {r["file"]: r["size"] for r in listed}["odd.img"] == 300_004
    assert patched_blocks(mounted.data, "two") > 0  # rsync's small in-place writes became patches


def patched_blocks(data: Path, snapshot: str) -> int:
    """How many blocks of vm@<snapshot> are stored as patches."""
    from engine.deployment import Deployment
    from image.pool import ImagePool

    with Deployment.open(data) as dep:
        pool = ImagePool(dep)
        try:
            reader = pool.reader(pool.version("h1", "vm", snapshot))
            blocks = reader.map.stored(0, reader.map.blocks)
            return sum(len(dep.blobs.get(reader.map.get(b))) < reader.block_size for b in blocks)
        finally:
            pool.close()


def test_cli_refuses_a_push_while_the_mount_writes(tmp_path: Path, mounted: Mounted) -> None:  # noqa: F811
    img, _ = make_ext4(tmp_path, "8M")
    os.mkdir(mounted.path / "h1")
    (mounted.path / "h1" / "images" / "vm.img").write_bytes(b"x")
    # --wait 0: the mount keeps the disk open, so any wait would end the same way, only later.
    proc = cairn(mounted.data, "--wait", "0", "image", "push", "h1", "vm", str(img), check=False)
    assert proc.returncode == 1 and "being written" in proc.stderr
