"""Restore benchmark: `cairn restore` against `restic restore` of one Django release, from every backend.

Both tools first back up the five Django releases of bench/engine_bench.py in
turn (rsync'd into one directory, as nightlies of one source), then each run
restores the last release, the page cache dropped before every restore:

  local       cairn: SQLite catalog, local pool;      restic: local repository
  postgres    cairn: PostgreSQL catalog, local pool;  (restic has no catalog)
  s3          cairn: SQLite catalog, SeaweedFS pool;  restic: a repository on the same SeaweedFS

each to disk (under --work) and to tmpfs (/dev/shm). Cairn and restic take
turns per step. Reports the median wall time of the runs (and CPU seconds of
the child), checks the first restore of each against the original with
`diff -r`, and writes bench/out/restore.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine_bench import CAIRN, OUT, RESTIC, VERSIONS, fetch_django, timed  # noqa: E402
from engine.backup import backup_and_snapshot  # noqa: E402
from engine.deployment import Deployment  # noqa: E402
from tests.servers import S3_ACCESS_KEY, S3_SECRET_KEY, postgres, seaweedfs  # noqa: E402

SOURCE = "django"
TMPFS = Path("/dev/shm")


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def backups(work: Path, trees: dict[str, Path], cairns: dict[str, dict], restics: dict[str, dict]) -> Path:
    """Every release into every cairn deployment and restic repository; returns the last release's directory."""
    src = work / "src" / "django"
    src.mkdir(parents=True)
    for v in VERSIONS:
        subprocess.run(["rsync", "-a", "--delete", f"{trees[v]}/", f"{src}/"], check=True)
        for c in cairns.values():
            with Deployment.open(c["data"], c.get("db"), pool_config=c.get("pool")) as dep:
                if v == VERSIONS[0]:
                    dep.add_source(SOURCE)
                backup_and_snapshot(dep, SOURCE, src, v)
        for name, env in restics.items():
            proc = subprocess.run([RESTIC, "backup", "-q", "--host", "bench", str(src)], env=env, capture_output=True)
            if proc.returncode:
                raise SystemExit(f"restic backup ({name}): {proc.stderr.decode()}")
        print(f"  backed up {v}", flush=True)
    return src


def cairn_restore(c: dict, dest: Path) -> dict:
    cmd = [CAIRN, "--data", str(c["data"]), *(["--db", c["db"]] if c.get("db") else []), "restore",
           "--json", SOURCE, VERSIONS[-1], str(dest)]  # fmt: skip
    info, _ = timed(cmd)
    return info


def restic_restore(env: dict, dest: Path) -> dict:
    info, _ = timed([RESTIC, "restore", "latest", "--host", "bench", "--target", str(dest)], env)
    return info


def compare(original: Path, restored: Path) -> bool:
    return subprocess.run(["diff", "-r", "--no-dereference", str(original), str(restored)],
                          capture_output=True).returncode == 0  # fmt: skip


def restored_dir(tool: str, dest: Path, src: Path) -> Path:
    return dest if tool == "cairn" else dest / src.relative_to("/")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=OUT / "cache")
    ap.add_argument("--work", type=Path, default=Path("/var/tmp"))
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    trees = fetch_django(args.cache)
    work = Path(tempfile.mkdtemp(prefix="cairn-restore-bench-", dir=args.work))
    shm = Path(tempfile.mkdtemp(prefix="cairn-restore-bench-", dir=TMPFS))
    rows: list[dict] = []
    try:
        with postgres() as (host, port), seaweedfs() as weed:
            for bucket in ("cairn", "restic"):
                weed.create_bucket(bucket)
            cairns = {
                "local": {"data": work / "cairn-local"},
                "postgres": {"data": work / "cairn-pg", "db": f"postgresql+psycopg://postgres@{host}:{port}/postgres"},
                "s3": {"data": work / "cairn-s3", "pool": weed.config("cairn")},
            }
            base = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(work / "restic-cache")}
            restics = {
                "local": {**base, "RESTIC_REPOSITORY": str(work / "restic")},
                "s3": {**base, "RESTIC_REPOSITORY": f"s3:{weed.endpoint}/restic", "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
                       "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY},
            }  # fmt: skip
            for env in restics.values():
                subprocess.run([RESTIC, "init", "-q"], env=env, check=True, capture_output=True)
            src = backups(work, trees, cairns, restics)
            for run in range(args.runs):
                for backend in ("local", "postgres", "s3"):
                    for target, parent in (("disk", work), ("tmpfs", shm)):
                        for tool in ("cairn", "restic"):
                            if tool == "restic" and backend not in restics:
                                continue
                            dest = parent / f"restored-{tool}-{backend}"
                            shutil.rmtree(dest, ignore_errors=True)
                            drop_caches()
                            if tool == "cairn":
                                info = cairn_restore(cairns[backend], dest)
                            else:
                                info = restic_restore(restics[backend], dest)
                            if info["rc"]:
                                raise SystemExit(f"{tool} restore from {backend}: {info['stderr']}")
                            row = {"run": run, "backend": backend, "target": target, "tool": tool,
                                   "wall_s": info["wall_s"], "cpu_s": info["cpu_s"]}  # fmt: skip
                            if run == 0:
                                row["identical"] = compare(src, restored_dir(tool, dest, src))
                            rows.append(row)
                            print(f"  run {run + 1} {backend:<9}{target:<6}{tool:<7}{info['wall_s']:6.2f} s "
                                  f"(cpu {info['cpu_s']:.2f} s){'' if row.get('identical', True) else ' DIFFERS'}",
                                  flush=True)  # fmt: skip
                            shutil.rmtree(dest, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    report(rows, args.runs)


def report(rows: list[dict], runs: int) -> None:
    summary = []
    print(f"\nRestore of django {VERSIONS[-1]}, median of {runs} run(s), cold page cache")
    print(f"{'backend':<10}{'target':<7}{'cairn s':>9}{'restic s':>10}{'ratio':>7}")
    for backend in ("local", "postgres", "s3"):
        for target in ("disk", "tmpfs"):
            med = {}
            for tool in ("cairn", "restic"):
                walls = [r["wall_s"] for r in rows if (r["backend"], r["target"], r["tool"]) == (backend, target, tool)]
                med[tool] = statistics.median(walls) if walls else None
            ratio = med["cairn"] / med["restic"] if med["restic"] else None
            summary.append({"backend": backend, "target": target, **{f"{t}_s": v for t, v in med.items()}})
            print(f"{backend:<10}{target:<7}{med['cairn']:>9.2f}"
                  f"{med['restic'] if med['restic'] is not None else float('nan'):>10.2f}"
                  f"{ratio if ratio else float('nan'):>7.2f}")  # fmt: skip
    local = {s["target"]: s["cairn_s"] for s in summary if s["backend"] == "local"}
    pg = {s["target"]: s["cairn_s"] for s in summary if s["backend"] == "postgres"}
    print(f"PostgreSQL / SQLite catalog: {pg['disk'] / local['disk']:.2f}x (disk), {pg['tmpfs'] / local['tmpfs']:.2f}x")
    OUT.mkdir(exist_ok=True)
    doc = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": runs, "rows": rows, "summary": summary,
           "restic": subprocess.run([RESTIC, "version"], capture_output=True, text=True).stdout.strip()}  # fmt: skip
    (OUT / "restore.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
