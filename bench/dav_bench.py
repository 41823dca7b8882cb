"""WebDAV benchmark: rclone into and out of `cairn dav`, beside wsgidav's stock FilesystemProvider.

Steps, each run against both servers in one run, with the same rclone:
  a  5,000 small files (0-16 KiB, half text, half random) in 50 directories: copy in, copy out
  b  one 1 GiB file (half Python source text, half random): copy in, copy out
Targets: Cairn reaches >= 60% of the stock server's rate for a, >= 70% for b, both directions.
Three rounds, the two servers taking turns step by step; each figure is the best round.
Also measured on Cairn alone:
  c  PUT of 5 GiB of random bytes in one request: the server's peak RSS (target < 200 MB)
  d  PROPFIND Depth 1 of a directory of 100,000 files: seconds and the server's peak RSS
Both servers serve anonymously (authentication is not what is measured).
Prints a table and writes bench/out/dav.json.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
BIN = Path(sys.executable).parent
CAIRN = [sys.executable, "-c", "from appliance.cli import main; main()"]
TARGETS = {"a": 0.60, "b": 0.70}
SMALL_FILES = 5_000
LARGE = 1 << 30
HUGE_PUT = 5 << 30
BIG_DIR = 100_000
ROUNDS = 3


def text_source() -> bytes:
    lib = Path(os.__file__).parent
    return b"".join(p.read_bytes() for p in sorted(lib.glob("*.py")))


def make_small(root: Path, text: bytes, rnd: random.Random) -> int:
    for i in range(SMALL_FILES):
        d = root / f"d{i // 100:02}"
        d.mkdir(parents=True, exist_ok=True)
        n = rnd.randrange(0, 16 << 10)
        start = rnd.randrange(0, len(text) - n)
        (d / f"f{i:05}").write_bytes(rnd.randbytes(n) if i % 2 else text[start : start + n])
    return SMALL_FILES


def make_large(root: Path, text: bytes, rnd: random.Random) -> int:
    root.mkdir(parents=True)
    with open(root / "large.bin", "wb") as f:
        for i in range(LARGE >> 20):
            if i < (LARGE >> 21):
                start = rnd.randrange(0, len(text) - (1 << 20))
                f.write(text[start : start + (1 << 20)])
            else:
                f.write(os.urandom(1 << 20))
    return LARGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("server did not start")


@contextmanager
def server(cmd: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM, the peak RSS


def peak_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def rclone(src: str, dst: str, work: Path) -> float:
    env = {**os.environ, "RCLONE_CONFIG": str(work / "rclone.conf")}
    (work / "rclone.conf").touch()
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "rclone"), "copy", src, dst, "-q", "--retries", "1"], check=True, env=env)
    return time.perf_counter() - t0


def remote(port: int, base: str, path: str) -> str:
    return f":webdav,url='http://127.0.0.1:{port}{base}',vendor=owncloud,pacer_min_sleep=0:{path}"


def same_tree(a: Path, b: Path) -> bool:
    run = subprocess.run(["diff", "-rq", str(a), str(b)], capture_output=True)
    return run.returncode == 0


def run_round(sides: dict[str, tuple[int, str]], srcs: dict[str, Path], work: Path) -> dict[str, dict[str, float]]:
    """Copy each source in and back out, the sides taking turns step by step; seconds per direction."""
    out: dict[str, dict[str, float]] = {name: {} for name in sides}
    for step, src in srcs.items():
        for name, (port, base) in sides.items():
            out[name][f"{step}_in"] = rclone(str(src), remote(port, base, step), work)
        for name, (port, base) in sides.items():
            back = work / f"back-{name}-{step}"
            out[name][f"{step}_out"] = rclone(remote(port, base, step), str(back), work)
            if not same_tree(src, back):
                raise SystemExit(f"{name}: step {step} did not come back identical")
            shutil.rmtree(back)
    return out


def rounds(srcs: dict[str, Path], work: Path) -> dict[str, list[dict[str, float]]]:
    """ROUNDS rounds, each on a fresh Cairn deployment and an empty stock directory (nothing to dedup)."""
    times: dict[str, list[dict[str, float]]] = {"cairn": [], "stock": []}
    for i in range(ROUNDS):
        data, stock_root = work / f"cairn-data-{i}", work / f"stock-root-{i}"
        stock_root.mkdir()
        subprocess.run([*CAIRN, "--data", str(data), "source", "add", "bench"], check=True, capture_output=True)
        port_c, port_s = free_port(), free_port()
        cairn = [*CAIRN, "--data", str(data), "dav", "--listen", f"127.0.0.1:{port_c}", "--anonymous"]
        stock = [str(BIN / "wsgidav"), "--host", "127.0.0.1", "--port", str(port_s), "--root", str(stock_root),
                 "--auth", "anonymous", "--no-config", "-qqq"]  # fmt: skip
        with server(cairn, port_c, work / "cairn.log"), server(stock, port_s, work / "stock.log"):
            got = run_round({"cairn": (port_c, "/bench/current"), "stock": (port_s, "")}, srcs, work)
        for name in times:
            times[name].append(got[name])
        shutil.rmtree(data)
        shutil.rmtree(stock_root)
    return times


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The fastest of the rounds: the machine is shared, and slow rounds measure the neighbours."""
    return {key: min(r[key] for r in runs) for key in runs[0]}


def huge_put(port: int, pid: int) -> dict[str, float]:
    """One PUT of 5 GiB of random bytes, generated as it is sent: the server's peak RSS."""
    before = peak_mb(pid, "VmRSS")
    reset_peak(pid)

    def body() -> Iterator[bytes]:
        for _ in range(HUGE_PUT >> 20):
            yield os.urandom(1 << 20)

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("PUT", "/bench/current/huge.bin", body=body(), headers={"Content-Length": str(HUGE_PUT)})
    status = conn.getresponse().status
    seconds = time.perf_counter() - t0
    if status not in (201, 204):
        raise SystemExit(f"5 GiB PUT answered {status}")
    return {"seconds": seconds, "mb_s": HUGE_PUT / seconds / 1e6, "rss_before_mb": before, "peak_rss_mb": peak_mb(pid)}


def big_listing(port: int, pid: int) -> dict[str, float]:
    before = peak_mb(pid, "VmRSS")
    reset_peak(pid)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("PROPFIND", "/big/current/", headers={"Depth": "1"})
    r = conn.getresponse()
    entries = r.read().count(b"<D:response")
    seconds = time.perf_counter() - t0
    if r.status != 207 or entries != BIG_DIR + 1:
        raise SystemExit(f"listing: status {r.status}, {entries} entries")
    return {"seconds": seconds, "entries": entries, "rss_before_mb": before, "peak_rss_mb": peak_mb(pid)}


def prepare(work: Path) -> dict[str, Path]:
    text = text_source()
    rnd = random.Random(42)
    srcs = {"small": work / "src-small", "large": work / "src-large"}
    make_small(srcs["small"], text, rnd)
    make_large(srcs["large"], text, rnd)
    big = work / "src-big"
    big.mkdir()
    for i in range(BIG_DIR):
        (big / f"e{i:06}").touch()
    return srcs


def rates(seconds: dict[str, float]) -> dict[str, float]:
    return {
        "small_in": SMALL_FILES / seconds["small_in"], "small_out": SMALL_FILES / seconds["small_out"],
        "large_in": LARGE / seconds["large_in"] / 1e6, "large_out": LARGE / seconds["large_out"] / 1e6,
    }  # fmt: skip


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="cairn-dav-bench-", dir=os.environ.get("BENCH_TMP")))
    try:
        srcs = prepare(work)
        times = rounds(srcs, work)
        data = work / "cairn-data"
        subprocess.run([*CAIRN, "--data", str(data), "source", "add", "bench"], check=True, capture_output=True)
        subprocess.run([*CAIRN, "--data", str(data), "backup", "big", str(work / "src-big")], check=True,
                       capture_output=True)  # fmt: skip
        port = free_port()
        cairn = [*CAIRN, "--data", str(data), "dav", "--listen", f"127.0.0.1:{port}", "--anonymous"]
        with server(cairn, port, work / "cairn.log") as pc:  # fresh: memory is measured from a known start
            extra = {"c": huge_put(port, pc.pid), "d": big_listing(port, pc.pid)}
        report(rates(best(times["cairn"])), rates(best(times["stock"])), extra, times)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(cairn: dict[str, float], stock: dict[str, float], extra: dict[str, dict[str, float]], times: object) -> None:
    rows = []
    print(f"{'step':<12}{'cairn':>12}{'stock':>12}{'ratio':>8}{'target':>8}")
    for key in cairn:
        step = "a" if key.startswith("small") else "b"
        unit = "files/s" if step == "a" else "MB/s"
        ratio = cairn[key] / stock[key]
        ok = ratio >= TARGETS[step]
        rows.append({"step": key, "unit": unit, "cairn": cairn[key], "stock": stock[key], "ratio": ratio, "ok": ok})
        print(f"{key:<12}{cairn[key]:>12.1f}{stock[key]:>12.1f}{ratio:>8.2f}{TARGETS[step]:>8.2f} {unit}"
              f"{'' if ok else '  MISSED'}")  # fmt: skip
    c, d = extra["c"], extra["d"]
    print(f"c  5 GiB PUT: {c['mb_s']:.0f} MB/s, server RSS {c['rss_before_mb']:.0f} MB before, "
          f"{c['peak_rss_mb']:.0f} MB peak (target < 200)")  # fmt: skip
    print(f"d  PROPFIND of {BIG_DIR:,} entries: {d['seconds']:.1f} s, server RSS {d['rss_before_mb']:.0f} MB before, "
          f"{d['peak_rss_mb']:.0f} MB peak")  # fmt: skip
    OUT.mkdir(exist_ok=True)
    doc = {"rclone": rows, "huge_put": c, "big_listing": d, "seconds": times}
    (OUT / "dav.json").write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
