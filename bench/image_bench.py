"""Image pool benchmark: a 1 GiB ext4 image and two changed versions, `cairn image push` beside restic.

Versions: v1 made by `mkfs.ext4 -d` from ~750 MiB of files (incompressible
and text); v2 with 1% of the image's 4 KiB blocks overwritten at random
inside file data (scattered small writes); v3 with a 64 MiB file inside the
image rewritten (a contiguous change). Each is pushed with each block size
(64, 128, 256 KiB) into a fresh data directory, followed there by 1% of the
image's pages rewritten in place at random (what a VM's disk does between
snapshots: each block changed is read before it is written), and backed up by restic
(repository v2, --compression auto). With the default block size the same
versions also go into the mount with `dd`, and are read back through the
mount and over NBD. Stored bytes are the growth of the pool (or repository)
directory. Results: bench/out/image.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from image.ext4 import ExtFS  # noqa: E402

CAIRN = [sys.executable, "-c", "from appliance.cli import main; main()"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
MiB, GiB = 1 << 20, 1 << 30


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def timed(cmd: list[str], **kw: object) -> tuple[float, str]:
    t = time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=kw.pop("env", ENV), **kw)  # type: ignore[call-overload]
    return time.monotonic() - t, out.stdout


def make_tree(root: Path) -> None:
    rng = random.Random(1)
    (root / "media").mkdir(parents=True)
    (root / "big64.bin").write_bytes(rng.randbytes(64 * MiB))
    for i in range(520):  # ~540 MiB incompressible, 64 KiB to 2 MiB each: the image ends ~80% full
        (root / "media" / f"m{i:03}.bin").write_bytes(rng.randbytes(rng.randrange(64 << 10, 2 * MiB)))
    text, total = root / "text", 0
    for src in sorted(Path("/usr/lib/python3.11").rglob("*.py")):
        if total > 150 * MiB:
            break
        dest = text / src.relative_to("/usr/lib/python3.11")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        total += dest.stat().st_size


def file_blocks(img: Path, path: str | None) -> list[int]:
    """Physical 4 KiB blocks of one file, or of every file but big64.bin."""
    with open(img, "rb") as f:
        fs = ExtFS(lambda o, n: os.pread(f.fileno(), n, o))
        todo, blocks = [fs.lookup(path)] if path else [fs.lookup("/")], []
        while todo:
            node = todo.pop()
            if node.is_dir:
                todo += [e.inode for e in fs.listdir(node) if e.name not in (b"big64.bin", b"lost+found")]
            elif not node.is_symlink:
                for _logical, count, physical in fs.extents(node):
                    if physical is not None:
                        blocks += range(physical, physical + count)
    return blocks


def overwrite(img: Path, blocks: list[int], seed: int) -> None:
    rng = random.Random(seed)
    with open(img, "r+b") as f:
        for b in blocks:
            os.pwrite(f.fileno(), rng.randbytes(4096), b * 4096)


def versions(work: Path) -> list[Path]:
    tree = work / "tree"
    make_tree(tree)
    v1, v2, v3 = work / "v1.raw", work / "v2.raw", work / "v3.raw"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(tree), str(v1), "1G"], check=True)
    shutil.rmtree(tree)
    shutil.copyfile(v1, v2)
    scattered = random.Random(2).sample(file_blocks(v1, None), GiB // 4096 // 100)
    overwrite(v2, scattered, 3)
    shutil.copyfile(v2, v3)
    overwrite(v3, file_blocks(v3, "big64.bin"), 4)
    for v in (v1, v2, v3):
        subprocess.run(["e2fsck", "-fn", str(v)], check=True, capture_output=True)
    return [v1, v2, v3]


def catalog_bytes(data: Path) -> int:
    with sqlite3.connect(data / "catalog.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return (data / "catalog.db").stat().st_size


def push_run(work: Path, imgs: list[Path], block_kib: int, data_blocks: list[int]) -> list[dict[str, float]]:
    data = work / f"cairn-{block_kib}"
    rows = []
    for n, img in enumerate(imgs, 1):
        subprocess.run(["cat", str(img)], stdout=subprocess.DEVNULL, check=True)  # warm, as restic's input is
        before = du(data / "pool")
        cmd = [*CAIRN, "--data", str(data), "image", "push", "h1", "vm", str(img), "--block-size", str(block_kib)]
        seconds, out = timed([*cmd, "--snapshot", f"v{n}", "--json"])
        stats = json.loads(out)
        stored = du(data / "pool") - before
        rows.append({"seconds": seconds, "stored": stored, "changed_blocks": stats["changed_blocks"],
                     "catalog": catalog_bytes(data), "new_bytes": stats["new_bytes"]})  # fmt: skip
    rows.append(scattered_writes(data, data_blocks))
    shutil.rmtree(data)
    return rows


def scattered_writes(data: Path, data_blocks: list[int]) -> dict[str, float]:
    """1% of the image's 4 KiB pages rewritten in place at random, as a VM's disk writes them, then a snapshot.

    In process, on the engine's image pool (what the mount's writes call, less
    FUSE): each write into a block not yet changed reads that block first.
    """
    from engine.deployment import Deployment
    from image.pool import ImagePool

    rng = random.Random(5)
    pages = rng.sample(data_blocks, GiB // 4096 // 100)
    before = du(data / "pool")
    with Deployment.open(data) as dep:
        pool = ImagePool(dep)
        start = time.monotonic()
        disk = pool.disk("h1", "vm")
        for page in pages:
            disk.write(page * 4096, rng.randbytes(4096))
        dep.create_snapshot("h1", "scattered")
        seconds = time.monotonic() - start
        pool.close()
    return {"seconds": seconds, "stored": du(data / "pool") - before, "writes": len(pages)}


def restic_run(work: Path, imgs: list[Path]) -> list[dict[str, float]]:
    repo = work / "restic"
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(repo),
               RESTIC_CACHE_DIR=str(work / "restic-cache"))  # fmt: skip
    subprocess.run(["restic", "init", "--repository-version", "2"], env=env, check=True, capture_output=True)
    rows = []
    for img in imgs:
        shutil.copyfile(img, work / "disk.raw")  # one path: restic compares with its parent snapshot
        subprocess.run(["cat", str(work / "disk.raw")], stdout=subprocess.DEVNULL, check=True)
        before = du(repo)
        seconds, _ = timed(
            ["restic", "backup", "--compression", "auto", "--host", "b", str(work / "disk.raw")], env=env
        )
        rows.append({"seconds": seconds, "stored": du(repo) - before})
    shutil.rmtree(repo)
    return rows


def mount_run(work: Path, imgs: list[Path]) -> dict[str, object]:
    data, mnt = work / "cairn-mount", work / "mnt"
    mnt.mkdir()
    log = open(work / "mount.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([*CAIRN, "--data", str(data), "mount", str(mnt)], stdout=log, stderr=log, env=ENV)
    try:
        while "mounted at" not in (work / "mount.log").read_text():
            time.sleep(0.1)
        os.mkdir(mnt / "h1")
        target = mnt / "h1" / "images" / "vm.img"
        rows = []
        for n, img in enumerate(imgs[:2], 1):
            before = du(data / "pool")
            seconds, _ = timed(["dd", f"if={img}", f"of={target}", "bs=1M", "conv=notrunc", "status=none"])
            os.mkdir(mnt / "h1" / "snapshots" / f"v{n}")
            rows.append({"seconds": seconds, "stored": du(data / "pool") - before})
        seconds, _ = timed(["dd", f"if={mnt / 'h1' / 'images' / 'vm@v2.img'}", "of=/dev/null", "bs=1M", "status=none"])
        read_mount = GiB / MiB / seconds
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        log.close()
    nbd = subprocess.Popen([*CAIRN, "--data", str(data), "image", "export", "h1", "vm@v2", "--nbd", "127.0.0.1:0",
                            "--json"], stdout=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    try:
        assert nbd.stdout is not None
        url = json.loads(nbd.stdout.readline() + nbd.stdout.readline() + nbd.stdout.readline() + nbd.stdout.readline())
        out = work / "restored.raw"
        seconds, _ = timed(["qemu-img", "convert", "-f", "raw", "-O", "raw", url["url"], str(out)])
        subprocess.run(["cmp", str(out), str(imgs[1])], check=True)
        read_nbd = GiB / MiB / seconds
        out.unlink()
    finally:
        nbd.terminate()
        nbd.communicate(timeout=60)
    shutil.rmtree(data)
    return {"dd": rows, "read_mount_mb_s": read_mount, "read_nbd_mb_s": read_nbd}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="cairn-image-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    try:
        imgs = versions(work)
        result: dict[str, object] = {"restic": restic_run(work, imgs)}
        data_blocks = file_blocks(imgs[0], None)
        for kib in (64, 128, 256):
            result[f"push_{kib}k"] = push_run(work, imgs, kib, data_blocks)
            print(kib, result[f"push_{kib}k"], flush=True)
        result["mount"] = mount_run(work, imgs)
        print(json.dumps(result, indent=1))
        out = ROOT / "bench" / "out"
        out.mkdir(exist_ok=True)
        (out / "image.json").write_text(json.dumps(result, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
