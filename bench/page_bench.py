"""Web UI page loads: each page of the UI over a deployment of 20 sources x 100 snapshots and a source
of 1,000,000 files, against the do-nothing floor (GET /healthz) measured in the same run.

Builds the deployment once (cached in bench/out/pages-data, ~5 min), then for each of RUNS runs starts
`cairn serve` (plain HTTP on loopback), signs in, and loads each page LOADS times in a row on one
keep-alive connection; reports p50 and p99 per page, the medians over the runs. Target: p99 < 200 ms.
Writes bench/out/pages.json.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from tests.servers import free_port  # noqa: E402

CAIRN = [sys.executable, "-c", "from appliance.cli import main; main()"]
OUT = ROOT / "bench" / "out"
DATA = OUT / "pages-data"
SOURCES, SNAPSHOTS = 20, 100
BIG_DIRS, BIG_FILES = 1000, 1000  # 1,000,000 files in 1,000 folders
RUNS, LOADS = 3, 40
PASSWORD = "page bench password"

PAGES = {
    "floor (/healthz)": "/healthz",
    "dashboard": "/",
    "jobs": "/jobs",
    "source (100 snapshots)": "/sources/host00",
    "browse a folder of 1,000 (big source)": "/sources/big/snapshots/s1/?path=/d0500",
    "browse the root of the big source": "/sources/big/snapshots/s1/?path=/",
    "filter a folder of 1,000": "/sources/big/snapshots/s1/?path=/d0500&q=f09",
    "search the big source (limit 100)": "/sources/big/search?q=f0500",
    "search 100 snapshots, one file": "/sources/host00/search?q=file0.txt",
    "versions of a file (100 snapshots)": "/sources/host00/history?path=/f/file0.txt",
    "restore confirmation": "/sources/host00/snapshots/s050/restore?path=/f/file0.txt",
    "settings": "/settings",
    "users": "/users",
    "storage": "/storage",
    "usage (API, 365 days)": "/api/v1/usage?days=365",
}


def build() -> None:
    """The deployment, once: 20 small sources of 100 snapshots, and the big one."""
    from appliance.accounts import Accounts
    from engine.backup import backup
    from engine.deployment import Deployment

    if (DATA / "ready").exists():
        return
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        small, big = Path(tmp) / "small", Path(tmp) / "big"
        (small / "f").mkdir(parents=True)
        for i in range(50):
            (small / "f" / f"file{i}.txt").write_text(f"{i}\n" * 100)
        for d in range(BIG_DIRS):
            folder = big / f"d{d:04}"
            folder.mkdir(parents=True)
            for f in range(BIG_FILES):
                (folder / f"f{f:04}").write_bytes(b"%d/%d\n" % (d, f))
        with Deployment.open(DATA) as dep:
            Accounts(dep.catalog).add_user("admin", PASSWORD, admin=True)
            for i in range(SOURCES):
                name = f"host{i:02}"
                dep.add_source(name)
                for n in range(SNAPSHOTS):
                    (small / "f" / "file0.txt").write_text(f"version {n}\n")  # a file that changes each time
                    backup(dep.working_tree(name), dep.blobs, str(small))
                    dep.create_snapshot(name, f"s{n:03}")
            dep.add_source("big")
            backup(dep.working_tree("big"), dep.blobs, str(big))
            dep.create_snapshot("big", "s1")
    (DATA / "ready").write_text("")


def measure() -> dict[str, list[float]]:
    port = free_port()
    log = OUT / "pages-serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([*CAIRN, "--data", str(DATA), "serve", "--listen", f"127.0.0.1:{port}",
                                   "--no-tls"], stdout=out, stderr=out)  # fmt: skip
    try:
        while "serving on" not in log.read_text():
            assert server.poll() is None, log.read_text()
            time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        body = json.dumps({"name": "admin", "password": PASSWORD})
        conn.request("POST", "/api/v1/login", body=body, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        reply.read()
        cookie = re.match(r"[^;]+", reply.getheader("Set-Cookie", "")).group(0)  # type: ignore[union-attr]
        times: dict[str, list[float]] = {}
        for label, path in PAGES.items():
            times[label] = []
            for _ in range(LOADS):
                start = time.perf_counter()
                conn.request("GET", path, headers={"Cookie": cookie})
                answer = conn.getresponse()
                answer.read()
                times[label].append(time.perf_counter() - start)
                assert answer.status == 200, (label, answer.status)
        conn.close()
        return times
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build()
    print(f"deployment ready in {time.monotonic() - started:.0f} s", flush=True)
    runs = [measure() for _ in range(RUNS)]
    report = {}
    for label in PAGES:
        p50 = statistics.median(statistics.median(r[label]) for r in runs) * 1000
        p99 = statistics.median(sorted(r[label])[int(0.99 * (LOADS - 1))] for r in runs) * 1000
        report[label] = {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1)}
        print(f"{label:42} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms", flush=True)
    (OUT / "pages.json").write_text(json.dumps({"runs": RUNS, "loads": LOADS, "pages": report}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
