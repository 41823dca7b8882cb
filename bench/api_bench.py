"""API latency under load: 20 concurrent clients list sources and snapshots while a backup runs.

Starts `cairn serve` on a loopback port over a deployment with 20 sources
of 30 snapshots each, then runs a backup of the engine benchmark's Django
trees (cached in bench/out/cache) into another source in a second process,
while 20 client threads, each with its own API token and keep-alive
connection, alternate GET /api/v1/sources and GET /api/v1/sources/<s>/snapshots,
each pausing THINK seconds between requests (50 ms: a page or a script that
polls; `--think 0` saturates the server instead, and then latency is only
queueing: 20 clients / throughput). Targets: p50 < 20 ms, p99 < 200 ms.
Writes bench/out/api.json.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from engine_bench import OUT, VERSIONS, fetch_django  # noqa: E402

from tests.servers import free_port  # noqa: E402

CAIRN = [sys.executable, "-c", "from appliance.cli import main; main()"]
CLIENTS, SECONDS = 20, 20.0
THINK = 0.05
SOURCES, SNAPSHOTS = 20, 30


def setup(data: Path, tree: Path) -> None:
    from engine.backup import backup
    from engine.deployment import Deployment

    with Deployment.open(data) as dep:
        for i in range(SOURCES):
            name = f"host{i:02}"
            dep.add_source(name)
            backup(dep.working_tree(name), dep.blobs, str(tree / "docs"))
            for n in range(SNAPSHOTS):
                dep.create_snapshot(name, f"s{n:03}")


def client(port: int, token: str, stop: threading.Event, latencies: list[float], errors: list[str],
           think: float) -> None:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    n = 0
    while not stop.is_set():
        path = "/api/v1/sources" if n % 2 == 0 else f"/api/v1/sources/host{n % SOURCES:02}/snapshots"
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        reply = conn.getresponse()
        reply.read()
        latencies.append(time.perf_counter() - start)
        if reply.status != 200:
            errors.append(f"{path}: {reply.status}")
        n += 1
        stop.wait(think)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--think", type=float, default=THINK, help="seconds each client waits between requests")
    think = ap.parse_args().think
    trees = fetch_django(OUT / "cache")
    work = Path(tempfile.mkdtemp(prefix="cairn-api-bench-"))
    data, port = work / "data", free_port()
    try:
        setup(data, trees[VERSIONS[0]])
        log = work / "serve.log"
        with open(log, "wb") as out:
            server = subprocess.Popen([*CAIRN, "--data", str(data), "serve", "--listen", f"127.0.0.1:{port}",
                                       "--no-tls"], stdout=out, stderr=out)  # fmt: skip
        while "serving on" not in log.read_text():
            time.sleep(0.1)
        password = re.search(r"one-time password (\S+)", log.read_text())
        assert password
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("POST", "/api/v1/login", json.dumps({"name": "admin", "password": password.group(1)}),
                     {"Content-Type": "application/json"})  # fmt: skip
        reply = conn.getresponse()
        cookie, csrf = reply.getheader("Set-Cookie", "").split(";")[0], json.loads(reply.read())["csrf"]
        tokens = []
        for i in range(CLIENTS):
            conn.request("POST", "/api/v1/tokens", json.dumps({"name": f"c{i}"}),
                         {"Content-Type": "application/json", "Cookie": cookie, "X-CSRF-Token": csrf})  # fmt: skip
            tokens.append(json.loads(conn.getresponse().read())["token"])
        stop = threading.Event()

        def keep_backing_up() -> None:
            n = 0
            while not stop.is_set():  # a backup runs for the whole measurement
                v = VERSIONS[n % len(VERSIONS)]
                subprocess.run([*CAIRN, "--data", str(data), "backup", "busy", str(trees[v]), "--snapshot", f"r{n}"],
                               check=True, capture_output=True)  # fmt: skip
                n += 1

        backing_up = threading.Thread(target=keep_backing_up)
        backing_up.start()
        latencies: list[float] = []
        errors: list[str] = []
        threads = [threading.Thread(target=client, args=(port, t, stop, latencies, errors, think)) for t in tokens]
        for t in threads:
            t.start()
        time.sleep(SECONDS)
        stop.set()
        for t in threads:
            t.join()
        backup_running = backing_up.is_alive()
        backing_up.join()
        server.send_signal(signal.SIGTERM)
        server.wait()
        ms = sorted(x * 1000 for x in latencies)
        p50, p99 = statistics.median(ms), ms[int(len(ms) * 0.99)]
        result = {"requests": len(ms), "rps": len(ms) / SECONDS, "p50_ms": p50, "p99_ms": p99, "max_ms": ms[-1],
                  "errors": len(errors), "backup_ran_throughout": backup_running, "think_s": think,
                  "targets": {"p50": 20, "p99": 200}}  # fmt: skip
        (OUT / "api.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        print("p50", "OK" if p50 < 20 else "MISS", "p99", "OK" if p99 < 200 else "MISS")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
