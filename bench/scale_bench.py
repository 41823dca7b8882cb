"""Many small files: a first backup, an unchanged re-run and a restore, cairn against restic 0.14.

The tree: FILES files of 0-2 KiB (uniform) in DIRS directories (100 to a
parent), cut at seeded offsets from 4 MiB of seeded word text, so files
compress as source code does and share no chunks. It is made once into
bench/out/cache and reused.

Per run, in this order, each with a fresh cairn data directory and restic
repository: cairn's first backup, restic's first backup, cairn's re-run with
nothing changed, restic's, then a restore of the snapshot to an empty
directory by each (page cache dropped before each step, as root). Per step and
tool: wall and CPU seconds of the child, peak RSS (ru_maxrss of the child),
and the pool / repository size after the first backup. Medians of --runs
runs; writes bench/out/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_bench import CAIRN, OUT, RESTIC, du
from bench.restore_bench import drop_caches

STEPS = ("first backup", "unchanged re-run", "restore")


def make_tree(root: Path, files: int, dirs: int, seed: int = 7) -> Path:
    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rnd.choice(letters) for _ in range(rnd.randint(2, 10))) for _ in range(5000)]
    text = " ".join(rnd.choice(words) for _ in range(700_000)).encode()[: 4 << 20]
    per = files // dirs
    for d in range(dirs):
        path = root / f"d{d // 100:03d}" / f"d{d:05d}"
        path.mkdir(parents=True)
        for f in range(per):
            size, start = rnd.randint(0, 2048), rnd.randrange(len(text) - 2048)
            (path / f"f{f:05d}.txt").write_bytes(text[start : start + size])
    done.touch()
    return root


def timed(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float | int | str]:
    """Wall and CPU seconds and peak RSS (MB) of one child; fails loudly on a non-zero exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def run_once(work: Path, tree: Path) -> dict[str, dict[str, dict]]:
    data, repo, out = work / "cairn", work / "restic", work / "restore"
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(repo),
               RESTIC_CACHE_DIR=str(work / "restic-cache"))  # fmt: skip
    subprocess.run([RESTIC, "init", "--repository-version", "2"], check=True, env=env, capture_output=True)
    result: dict[str, dict[str, dict]] = {step: {} for step in STEPS}
    for step, snapshot in zip(STEPS[:2], ("first", "again"), strict=True):
        backup = {
            "cairn": [CAIRN, "--data", str(data), "backup", "many", str(tree), "--snapshot", snapshot],
            "restic": [RESTIC, "backup", "-q", "--compression", "auto", "--host", "bench", str(tree)],
        }
        for tool in ("cairn", "restic"):
            drop_caches()
            result[step][tool] = timed(backup[tool], env)
            if step == STEPS[0]:
                result[step][tool]["pool_mb"] = du(data / "pool" if tool == "cairn" else repo) / 1e6
    restore = {
        "cairn": [CAIRN, "--data", str(data), "restore", "many", "first", str(out / "cairn")],
        "restic": [RESTIC, "restore", "-q", "latest", "--target", str(out / "restic")],
    }
    for tool in ("cairn", "restic"):
        drop_caches()
        result["restore"][tool] = timed(restore[tool], env)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=300_000)
    ap.add_argument("--dirs", type=int, default=3_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    tree = make_tree(OUT / "cache" / f"many-{args.files}-{args.dirs}", args.files, args.dirs)
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(dir=args.work, prefix="scale-") as work:
            runs.append(run_once(Path(work), tree))
        last = runs[-1]
        walls = (f"{s} {last[s]['cairn']['wall_s']:.1f}/{last[s]['restic']['wall_s']:.1f} s" for s in STEPS)
        print(f"run {i + 1} (cairn/restic): " + ", ".join(walls), flush=True)
    table = {
        step: {tool: {key: statistics.median(r[step][tool][key] for r in runs) for key in runs[0][step][tool]}
               for tool in ("cairn", "restic")}
        for step in STEPS
    }  # fmt: skip
    print(f"\n{args.files:,} files in {args.dirs:,} directories, medians of {args.runs} runs (cairn / restic)")
    for step in STEPS:
        c, r = table[step]["cairn"], table[step]["restic"]
        line = f"{step:18s} wall {c['wall_s']:6.2f} / {r['wall_s']:6.2f} s ({c['wall_s'] / r['wall_s']:.2f}x)"
        line += f"  cpu {c['cpu_s']:6.1f} / {r['cpu_s']:6.1f} s  peak RSS {c['rss_mb']:5.0f} / {r['rss_mb']:5.0f} MB"
        if "pool_mb" in c:
            line += f"  pool {c['pool_mb']:.1f} / {r['pool_mb']:.1f} MB ({c['pool_mb'] / r['pool_mb']:.2f}x)"
        print(line)
    OUT.mkdir(exist_ok=True)
    doc = {"files": args.files, "dirs": args.dirs, "runs": runs, "median": table, "when": time.time()}
    (OUT / "scale.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
