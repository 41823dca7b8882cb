"""GC benchmark: collect a pool after deleting half its snapshots.

The engine benchmark's corpus (five Django sdists and the 1 GiB mixed file,
cached in bench/out/cache) is backed up as six snapshots; then the working
trees move on (the big file is replaced by an empty directory), three
snapshots are deleted, and `gc.collect` runs. Reports pack data examined per
second (target >= 100 MB/s), what was freed, and checks afterwards that the
pool scrubs clean and the kept snapshots restore identical.
Writes bench/out/gc.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_bench import OUT, VERSIONS, fetch_django, make_big_file

from engine import gc
from engine.backup import backup_and_snapshot
from engine.check import check_pool
from engine.deployment import Deployment
from engine.restore import restore

TARGET = 100.0  # MB/s of pack data examined


def main() -> None:
    cache = OUT / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    trees = fetch_django(cache)
    big = make_big_file(cache, trees[VERSIONS[0]])
    work = Path(tempfile.mkdtemp(prefix="cairn-gc-bench-"))
    try:
        (work / "big").mkdir()
        shutil.copy(big, work / "big" / "mixed.bin")
        (work / "empty").mkdir()
        with Deployment.open(work / "data") as dep:
            dep.add_source("django")
            dep.add_source("big")
            for v in VERSIONS:
                backup_and_snapshot(dep, "django", str(trees[v]), v)
            backup_and_snapshot(dep, "big", str(work / "big"), "b1")
            backup_and_snapshot(dep, "big", str(work / "empty"), "b2")
            before = dep.pool_usage()["stored_bytes"]
            for name in (VERSIONS[0], VERSIONS[2]):
                dep.delete_snapshot("django", name)
            dep.delete_snapshot("big", "b1")
            report = gc.collect(dep)
            after = dep.pool_usage()["stored_bytes"]
            scrub = check_pool(dep.blobs)
            identical = True
            for v in (VERSIONS[1], VERSIONS[3], VERSIONS[4]):
                out = work / "out" / v
                restore(dep.snapshot("django", v), b"", str(out))
                diff = subprocess.run(["diff", "-r", "-q", str(trees[v]), str(out)], capture_output=True)
                identical &= diff.returncode == 0
        rate = report.pack_bytes / 1e6 / report.seconds
        result = {
            "pool_before_mb": before / 1e6, "pool_after_mb": after / 1e6,
            "packs_examined": report.packs, "pack_mb_examined": report.pack_bytes / 1e6,
            "seconds": report.seconds, "mb_per_s": rate, "target_mb_per_s": TARGET,
            "dead_blobs": report.dead_blobs, "freed_mb": report.bytes_freed / 1e6,
            "packs_deleted": report.packs_deleted, "packs_written": report.packs_written,
            "scrub_ok": scrub.ok, "kept_snapshots_identical": identical,
        }  # fmt: skip
        (OUT / "gc.json").write_text(json.dumps(result, indent=2))
        for key, value in result.items():
            print(f"{key:26} {value:.3f}" if isinstance(value, float) else f"{key:26} {value}")
        print("target", "OK" if rate >= TARGET else "MISS")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
