"""The known-blob set: memory and lookup time of engine/knownids.py beside a dict of every id.

For N random 32-byte ids with their lengths (default 1,000,000), each built the
way the blob store loads it (rows in id order): the bytes held once built
(tracemalloc), and the time of a lookup of an id that is there and of one that
is not (median of three passes over 200,000 lookups each). Prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.knownids import KnownIds


def held(build: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    built = build()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return built, after - before


def lookup_us(get: Callable[[bytes], object], probes: list[bytes]) -> float:
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        for p in probes:
            get(p)
        runs.append((time.perf_counter() - t0) / len(probes) * 1e6)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000)
    args = ap.parse_args()
    rows = sorted((os.urandom(32), 4096 + i % 1000) for i in range(args.n))
    there = [rows[i][0] for i in range(0, args.n, max(1, args.n // 200_000))]
    absent = [os.urandom(32) for _ in range(len(there))]
    as_dict, dict_bytes = held(lambda: {bytes(memoryview(i)): n for i, n in rows})  # keys of its own, as loaded
    compact, compact_bytes = held(lambda: KnownIds((bytes(i), n) for i, n in rows))
    print(f"{args.n:,} ids        bytes held   per id   lookup (there)   lookup (absent)")
    for name, obj, size in (("dict", as_dict, dict_bytes), ("KnownIds", compact, compact_bytes)):
        get = obj.get  # type: ignore[attr-defined]
        print(f"{name:<12}{size / 1e6:>10.1f} MB{size / args.n:>8.0f} B"
              f"{lookup_us(get, there):>13.2f} µs{lookup_us(get, absent):>15.2f} µs")  # fmt: skip


if __name__ == "__main__":
    main()
