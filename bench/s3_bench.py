"""S3 benchmark: the engine benchmark's corpus backed up into a local pool and into S3 pools, in one run.

Pools, each a fresh deployment (SQLite catalog) in this one process:

  local        the local pool in the data directory
  s3           a SeaweedFS pool (`weed mini` on loopback, started here), retry on
  s3-limited   the same with the ratelimit filter at 100 PUT per 5 s
  s3-spool     SeaweedFS behind the write-back spool: backups return at
               local-disk speed; the time to drain is measured after the last step

Steps for each pool, in order: django 4.2.1 .. 4.2.5 rsync'd in turn into
one directory (successive nightlies of one source), then the 1 GiB mixed
file (half seeded text, half random; see engine_bench.py). Inputs are
warm in the page cache. Per step and pool: wall seconds, MB/s of the
step's input, new data (raw bytes of new chunks and trees), requests by
kind, and PUTs per GiB of new data (target: <= 80); with the spool, wall
time within 1.2x of the local pool's. Without the spool a backup returns
only once everything is stored, so there is nothing left to drain. Prints
a table and writes bench/out/s3.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from engine_bench import VERSIONS, fetch_django, make_big_file, regular_files, warm  # noqa: E402

from engine.backup import backup_and_snapshot  # noqa: E402
from engine.deployment import Deployment  # noqa: E402
from engine.storage.filter import find_layer  # noqa: E402
from engine.storage.ratelimit import RateLimit  # noqa: E402
from engine.storage.s3 import S3Backend  # noqa: E402
from tests.servers import SeaweedFS, seaweedfs  # noqa: E402

OUT = ROOT / "bench" / "out"
GiB = 1 << 30
TARGET_PUTS_PER_GIB = 80
LIMIT = {"requests": {"put": [100, 5]}}


def pool_configs(server: SeaweedFS, data: Path) -> dict[str, dict[str, Any]]:
    for bucket in ("bench-s3", "bench-limited", "bench-spool"):
        server.create_bucket(bucket)
    return {
        "local": {"kind": "local", "path": str(data / "local" / "pool")},
        "s3": server.config("bench-s3"),
        "s3-limited": server.config("bench-limited", filters={"ratelimit": LIMIT}),
        "s3-spool": server.config("bench-spool", filters={"spool": {}}),
    }


def requests_of(dep: Deployment) -> Counter[str]:
    """Requests so far: counted by the S3 backend; for a local pool, one put per object written."""
    s3 = find_layer(dep.backend, S3Backend)
    if s3 is not None:
        return Counter(s3.requests)
    return Counter({"put_object": sum(1 for _ in dep.backend.list())})


def puts(requests: Counter[str]) -> int:
    return sum(n for call, n in requests.items() if call in ("put_object", "upload_part", "create_multipart_upload",
                                                             "complete_multipart_upload"))  # fmt: skip


def run_pool(name: str, config: dict[str, Any], data: Path, src: Path, steps: list[tuple[str, Path]]) -> list[dict]:
    rows = []
    with Deployment.open(data / name, pool_config=config) as dep:
        dep.add_source("bench")
        for label, prepare in steps:
            path = prepare_step(label, prepare, src)
            size = sum(p.stat().st_size for p in regular_files(path))
            warm(path)
            before, stats_before = requests_of(dep), dict(dep.blobs.stats)
            t0 = time.perf_counter()
            backup_and_snapshot(dep, "bench", path, label.replace(" ", "-"))
            wall = time.perf_counter() - t0
            made = requests_of(dep) - before
            new = dep.blobs.stats["new_bytes"] - stats_before["new_bytes"]
            stored = dep.blobs.stats["stored_bytes"] - stats_before["stored_bytes"]
            limiter = find_layer(dep.backend, RateLimit)
            rows.append({
                "pool": name, "step": label, "bytes": size, "wall_s": wall, "mb_per_s": size / wall / 1e6,
                "new_bytes": new, "stored_bytes": stored, "requests": dict(made), "puts": puts(made),
                "limit_wait_s": limiter.waited if limiter else 0.0,
            })  # fmt: skip
            print(f"  {name:<11}{label:<18}{wall:>7.2f} s {puts(made):>4} PUTs", flush=True)
        t0 = time.perf_counter()
        if dep.spool is not None:
            dep.spool.wait_drained()
        drain = time.perf_counter() - t0
        if dep.spool is not None:  # its PUTs ran in the background: count them once drained
            rows[-1]["puts"] = puts(requests_of(dep)) - sum(r["puts"] for r in rows[:-1])
        usage = dep.pool_usage()
    rows.append({"pool": name, "step": "pool", "packs": usage["packs"], "pool_bytes": usage["stored_bytes"],
                 "drain_s": drain})  # fmt: skip
    return rows


def prepare_step(label: str, source: Path, src: Path) -> Path:
    """django steps rsync into src/django, so that unchanged files keep their place; the big file is copied."""
    if label.startswith("django"):
        (src / "django").mkdir(parents=True, exist_ok=True)
        subprocess.run(["rsync", "-a", "--delete", f"{source}/", f"{src / 'django'}/"], check=True)
        return src / "django"
    (src / "big").mkdir(parents=True, exist_ok=True)
    if not (src / "big" / source.name).exists():
        shutil.copyfile(source, src / "big" / source.name)
    return src / "big"


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for pool in dict.fromkeys(r["pool"] for r in rows):
        steps = [r for r in rows if r["pool"] == pool and r["step"] != "pool"]
        wall, size = sum(r["wall_s"] for r in steps), sum(r["bytes"] for r in steps)
        new, n_puts = sum(r["new_bytes"] for r in steps), sum(r["puts"] for r in steps)
        big = next(r for r in steps if r["step"] == "1 GiB mixed file")
        drain = next(r["drain_s"] for r in rows if r["pool"] == pool and r["step"] == "pool")
        out.append({
            "pool": pool, "wall_s": wall, "mb_per_s": size / wall / 1e6, "new_gib": new / GiB, "puts": n_puts,
            "puts_per_gib_new": n_puts / (new / GiB), "big_mb_per_s": big["mb_per_s"],
            "big_puts_per_gib_new": big["puts"] / (big["new_bytes"] / GiB),
            "limit_wait_s": steps[-1]["limit_wait_s"], "ok": n_puts / (new / GiB) <= TARGET_PUTS_PER_GIB,
            "drain_s": drain,
        })  # fmt: skip
    return out


def report(rows: list[dict], summary: list[dict]) -> None:
    head = f"{'pool':<12}{'step':<18}{'MB in':>8}{'wall s':>8}{'MB/s':>8}{'new MB':>8}{'PUTs':>6}{'PUT/GiB':>9}"
    head += "  requests"
    print(f"\n{head}\n{'-' * len(head)}")
    for r in rows:
        if r["step"] == "pool":
            continue
        per_gib = r["puts"] / (r["new_bytes"] / GiB) if r["new_bytes"] else 0
        line = f"{r['pool']:<12}{r['step']:<18}{r['bytes'] / 1e6:>8.1f}{r['wall_s']:>8.2f}{r['mb_per_s']:>8.1f}"
        line += f"{r['new_bytes'] / 1e6:>8.1f}{r['puts']:>6}{per_gib:>9.1f}  {dict(sorted(r['requests'].items()))}"
        print(line)
    print(f"\nTotals (target: <= {TARGET_PUTS_PER_GIB} PUTs per GiB of new data):")
    for s in summary:
        print(
            f"  {'OK  ' if s['ok'] else 'MISS'} {s['pool']:<11} {s['wall_s']:6.1f} s, "
            f"{s['mb_per_s']:6.1f} MB/s overall, "
            f"1 GiB file {s['big_mb_per_s']:6.1f} MB/s; {s['puts']} PUTs for {s['new_gib']:.2f} GiB new: "
            f"{s['puts_per_gib_new']:.1f} PUTs/GiB (1 GiB file alone {s['big_puts_per_gib_new']:.1f}); "
            f"waited on the limit {s['limit_wait_s']:.1f} s; drained {s['drain_s']:.1f} s after"
        )
    local = next((s for s in summary if s["pool"] == "local"), None)
    spool = next((s for s in summary if s["pool"] == "s3-spool"), None)
    if local and spool:
        ratio = spool["wall_s"] / local["wall_s"]
        mark = "OK  " if ratio <= 1.2 else "MISS"
        print(f"  {mark} with the spool, wall time into S3 is {ratio:.2f}x the local pool's")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=OUT / "cache", help="sdists, unpacked trees, the 1 GiB file")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()), help="parent of the temp work dir")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} before the run: the figures may suffer", flush=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    trees = fetch_django(args.cache)
    big = make_big_file(args.cache, trees[VERSIONS[0]])
    steps = [(f"django {v}", trees[v]) for v in VERSIONS] + [("1 GiB mixed file", big)]
    work = Path(tempfile.mkdtemp(prefix="cairn-s3-bench-", dir=args.work))
    rows: list[dict] = []
    try:
        with seaweedfs() as server:
            for name, config in pool_configs(server, work).items():
                rows += run_pool(name, config, work, work / f"src-{name}", steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(rows)
    report(rows, summary)
    result = {"limit": LIMIT, "target_puts_per_gib": TARGET_PUTS_PER_GIB, "summary": summary, "steps": rows,
              "load_average_before_after": [load, os.getloadavg()[0]]}  # fmt: skip
    (OUT / "s3.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {OUT / 's3.json'}; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
