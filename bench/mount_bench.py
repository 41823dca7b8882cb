"""Mount benchmark: stock rsync and tar through the FUSE mount, beside a local directory.

Steps, each run into `cairn mount` and into an empty local directory, in one run:
  a  rsync -a of 20,000 small files (0-16 KiB, half text, half random) in 200 directories
  b  rsync -a of 2 GiB of large files: 4 x 256 MiB of Python source text, 4 x 256 MiB random
  c  the same rsync of both trees again, nothing changed
  d  reading a whole snapshot back: tar -cf - . | wc -c (the local side reads its directory)
Targets: a >= 1,000 files/s, b >= 120 MB/s, c >= 10,000 files/s, d >= 300 MB/s.
Steps a, b and d also run against bench/nullfs.py, a pyfuse3 file system that does no
work (its reads are zeros): the floor of a Python FUSE mount on this machine at this moment, as the
host's load moves every figure by 5-10% from run to run.
Prints a table and writes bench/out/mount.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
CAIRN = [sys.executable, "-c", "from appliance.cli import main; main()"]
TARGETS = {"a": ("files/s", 1000), "b": ("MB/s", 120), "c": ("files/s", 10000), "d": ("MB/s", 300)}


def text_source() -> bytes:
    lib = Path(os.__file__).parent
    return b"".join(p.read_bytes() for p in sorted(lib.glob("*.py")))


def make_small(root: Path, text: bytes, rnd: random.Random) -> int:
    for i in range(20_000):
        d = root / f"d{i // 100:03}"
        d.mkdir(parents=True, exist_ok=True)
        n = rnd.randrange(0, 16 << 10)
        if i % 2:
            data = rnd.randbytes(n)
        else:
            start = rnd.randrange(0, len(text) - n)
            data = text[start : start + n]
        (d / f"f{i:05}").write_bytes(data)
    return 20_000


def make_large(root: Path, text: bytes, rnd: random.Random) -> int:
    root.mkdir(parents=True)
    size = 256 << 20
    for i in range(4):
        with open(root / f"text{i}", "wb") as f:
            written = 0
            while written < size:
                start = rnd.randrange(0, len(text) - (1 << 20))
                f.write(text[start : start + (1 << 20)])
                written += 1 << 20
        with open(root / f"random{i}", "wb") as f:
            for _ in range(size >> 20):
                f.write(os.urandom(1 << 20))
    return 8 * size


def timed(cmd: list[str] | str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, shell=isinstance(cmd, str), stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def rsync(src: Path, dest: Path) -> float:
    return timed(["rsync", "-a", f"{src}/", f"{dest}/"])


def mounted(cmd: list[str], mnt: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    while not os.path.ismount(mnt):
        if proc.poll() is not None:
            raise SystemExit(log_path.read_text())
        time.sleep(0.05)
    return proc


def floor(work: Path, small: Path, large: Path) -> dict[str, float]:
    """Steps a and b into the do-nothing file system, and d out of it (zeros, as many bytes)."""
    mnt = work / "nullmnt"
    mnt.mkdir()
    proc = mounted([sys.executable, str(Path(__file__).with_name("nullfs.py")), str(mnt)], mnt, work / "null.log")
    try:
        (mnt / "small").mkdir()
        (mnt / "large").mkdir()
        steps = {"a": rsync(small, mnt / "small"), "b": rsync(large, mnt / "large")}
        steps["d"] = timed(f"tar -C '{mnt}' -cf - . | wc -c")
        return steps
    finally:
        proc.terminate()
        proc.wait()


def run_side(name: str, target: Path, small: Path, large: Path, snapshot: Path | None) -> dict[str, float]:
    (target / "small").mkdir(parents=True, exist_ok=True)
    (target / "large").mkdir(exist_ok=True)
    a = rsync(small, target / "small")
    b = rsync(large, target / "large")
    c = rsync(small, target / "small") + rsync(large, target / "large")
    read_dir = target
    if snapshot is not None:
        snapshot.mkdir()
        read_dir = snapshot
    d = timed(f"tar -C '{read_dir}' -cf - . | wc -c")
    return {"a": a, "b": b, "c": c, "d": d}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cairn-mount-bench-"))
    rnd = random.Random(7)
    text = text_source()
    try:
        n_small = make_small(work / "small", text, rnd)
        large_bytes = make_large(work / "large", text, rnd)
        small_bytes = sum(p.stat().st_size for p in (work / "small").rglob("*") if p.is_file())
        subprocess.run(["sync"], check=True)
        timed(f"cat $(find '{work}' -type f) > /dev/null")
        mnt, data = work / "mnt", work / "data"
        mnt.mkdir()
        proc = mounted([*CAIRN, "--data", str(data), "mount", str(mnt)], mnt, work / "mount.log")
        try:
            (mnt / "bench").mkdir()
            cairn = run_side("cairn", mnt / "bench" / "current", work / "small", work / "large",
                             mnt / "bench" / "snapshots" / "s")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait()
        null = floor(work, work / "small", work / "large")
        local = run_side("local", work / "local", work / "small", work / "large", None)
        amounts = {"a": n_small, "b": large_bytes / 1e6, "c": n_small + 8, "d": (small_bytes + large_bytes) / 1e6}
        rows = {}
        print(f"{'step':4} {'unit':8} {'cairn':>10} {'floor':>10} {'local':>10} {'target':>8}")
        for step, (unit, target) in TARGETS.items():
            rate_c, rate_l = amounts[step] / cairn[step], amounts[step] / local[step]
            rate_n = amounts[step] / null[step] if step in null else None
            rows[step] = {"unit": unit, "cairn": rate_c, "floor": rate_n, "local": rate_l, "cairn_s": cairn[step],
                          "local_s": local[step], "target": target, "ok": rate_c >= target}  # fmt: skip
            mark = "OK" if rate_c >= target else "MISS"
            shown_n = "-" if rate_n is None else f"{rate_n:.0f}"
            print(f"{step:4} {unit:8} {rate_c:10.0f} {shown_n:>10} {rate_l:10.0f} {target:8} {mark}")
        (OUT / "mount.json").write_text(json.dumps(rows, indent=2))
        errors = [line for line in (work / "mount.log").read_text().splitlines() if "Traceback" in line]
        print("mount log tracebacks:", len(errors))
    finally:
        for mnt in ("mnt", "nullmnt"):
            subprocess.run(["fusermount3", "-u", "-z", str(work / mnt)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
