"""Searching a source's snapshots by name: what the name index costs to write, and how fast it answers.

A source of 1,000,000 files, each with a name of its own (1,000 folders x 1,000 files), snapshotted
SNAPSHOTS times with 1% of the files changed, 0.1% removed and 0.1% added between snapshots. Built once
(cached in bench/out/search-data), on the SQLite catalog of `make run`.

Per run (RUNS runs, medians reported):
- indexing: the whole index dropped and rebuilt, the first snapshot (1,000,000 paths) and each later one
  apart; against the floor of reading every tree of the first snapshot without writing anything;
- searching: each query LOADS times, p50 and p99, against the floor of one catalog round trip;
- the catalog's size with the index and without it.
Writes bench/out/search.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from sqlalchemy import text  # noqa: E402

from engine import nameindex  # noqa: E402
from engine.backup import backup  # noqa: E402
from engine.deployment import Deployment  # noqa: E402
from engine.tree import deserialize, entry_bytes  # noqa: E402

OUT = ROOT / "bench" / "out"
DATA = OUT / "search-data"
DIRS, FILES, SNAPSHOTS = 1000, 1000, 4
RUNS, LOADS = 3, 20
QUERIES = {
    "one file (a part of its name)": "0500-0500",
    "one file (whole name)": "report-0500-0500.txt",
    "10 files (a part)": "-0500-050",
    "every file (a part; limit 100)": "report",
    "glob *.txt (limit 100)": "*.txt",
    "no match": "zzzz",
    "an added file (later snapshots)": "added-2-",
}


def build() -> None:
    if (DATA / "ready").exists():
        return
    shutil.rmtree(DATA, ignore_errors=True)
    rng = random.Random(1)
    with Deployment.open(DATA) as dep:
        src = Path("/dev/shm/cairn-search-bench")
        shutil.rmtree(src, ignore_errors=True)
        for d in range(DIRS):
            (src / f"d{d:04}").mkdir(parents=True)
            for f in range(FILES):
                (src / f"d{d:04}" / f"report-{d:04}-{f:04}.txt").write_bytes(b"%d/%d\n" % (d, f))
        dep.add_source("big")
        try:
            for n in range(SNAPSHOTS):
                if n:
                    for _ in range(DIRS * FILES // 100):
                        d, f = rng.randrange(DIRS), rng.randrange(FILES)
                        path = src / f"d{d:04}" / f"report-{d:04}-{f:04}.txt"
                        if path.exists():
                            path.write_bytes(b"changed in %d\n" % n)
                    for i in range(DIRS * FILES // 1000):
                        d, f = rng.randrange(DIRS), rng.randrange(FILES)
                        (src / f"d{d:04}" / f"report-{d:04}-{f:04}.txt").unlink(missing_ok=True)
                        (src / f"d{d:04}" / f"added-{n}-{i:04}.txt").write_bytes(b"new")
                started = time.monotonic()
                backup(dep.working_tree("big"), dep.blobs, str(src))
                dep.create_snapshot("big", f"s{n}")
                print(f"snapshot s{n} in {time.monotonic() - started:.0f} s", flush=True)
        finally:
            shutil.rmtree(src, ignore_errors=True)
    (DATA / "ready").write_text("")


def _catalog_bytes() -> int:
    return sum(p.stat().st_size for p in DATA.glob("catalog.db*"))


def measure() -> dict[str, float]:
    out: dict[str, float] = {}
    with Deployment.open(DATA) as dep:
        sid = dep.source("big").id
        first = dep.list_snapshots("big")[0]
        started = time.perf_counter()
        stack = [nameindex._top(lambda tree_id: entry_bytes(dep.blobs.get(tree_id)), first.root)]
        while stack:  # the floor: every tree of the first snapshot read and parsed (as the mount does), nothing written
            stack += [e.payload for e in deserialize(dep.blobs.get(stack.pop())) if e.is_dir]
        out["floor: read every tree of s0, s"] = time.perf_counter() - started
        with dep.catalog.engine.begin() as conn:
            nameindex.drop(conn, sid)
        with dep.catalog.engine.connect() as conn:
            conn.execute(text("VACUUM"))
        out["catalog without the index, MB"] = _catalog_bytes() / 1e6
        original = nameindex._index_one
        took: list[float] = []

        def timed(*args: object) -> None:
            started = time.perf_counter()
            original(*args)  # type: ignore[arg-type]
            took.append(time.perf_counter() - started)

        nameindex._index_one = timed  # type: ignore[assignment]
        try:
            dep.index_names("big")
        finally:
            nameindex._index_one = original  # type: ignore[assignment]
        out["index s0 (1,000,000 paths), s"] = took[0]
        out["index a later snapshot (median), s"] = statistics.median(took[1:])
        with dep.catalog.engine.connect() as conn:
            out["index rows"] = conn.execute(text("SELECT count(*) FROM index_versions")).scalar_one()
        out["catalog with the index, MB"] = _catalog_bytes() / 1e6
        with dep.catalog.engine.connect() as conn:
            floor = []
            for _ in range(LOADS):
                started = time.perf_counter()
                conn.execute(text("SELECT 1")).all()
                floor.append(time.perf_counter() - started)
        out["floor: one catalog round trip p50 ms"] = statistics.median(floor) * 1000
        for label, query in QUERIES.items():
            times = []
            for _ in range(LOADS):
                started = time.perf_counter()
                found, _more = dep.search("big", query)
                times.append(time.perf_counter() - started)
            assert found or query == "zzzz", label
            out[f"search {label} p50 ms"] = statistics.median(times) * 1000
            out[f"search {label} p99 ms"] = sorted(times)[int(0.99 * (LOADS - 1))] * 1000
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build()
    print(f"deployment ready in {time.monotonic() - started:.0f} s", flush=True)
    runs = []
    for n in range(RUNS):
        runs.append(measure())
        print(f"run {n + 1}: {json.dumps({k: round(v, 2) for k, v in runs[-1].items()})}", flush=True)
    report = {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}
    for key, value in report.items():
        print(f"{key:52} {value:>12,}", flush=True)
    (OUT / "search.json").write_text(json.dumps({"runs": RUNS, "loads": LOADS, "median": report}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
