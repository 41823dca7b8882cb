"""Working trees at scale: what a loaded inode costs, and an appliance holding many large sources.

A source of FILES files (100 to a directory) is written through the working
tree's backup path (`add`, synthetic attributes, every file naming one stored
chunk) and committed, then copied row for row into SOURCES-1 more sources of
the same catalog. The catalog is kept in bench/out/cache and reused.

Measured, each in a fresh child process:
- per inode: Python heap (tracemalloc) per inode after loading every
  directory of one source with no budget;
- idle: peak RSS after opening the deployment and, for every source, its
  working tree (the lease), the root's listing and one file's attributes,
  as a mount does when `ls` and `stat` reach it;
- walked: peak RSS after listing every directory of every source with the
  default `tree_cache` budget (512 MiB) and the background commit running
  (it trims, as in `cairn serve`), and the seconds that took.
Medians of --runs runs; writes bench/out/tree.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_bench import OUT
from engine.deployment import Deployment
from engine.worktree.tree import ROOT, WorkingTree

PER_DIR = 100


def build(data: Path, files: int, sources: int) -> None:
    done = data / ".complete"
    if done.exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    with Deployment.open(data) as dep:
        dep.add_source("s0")
        tree = dep.working_tree("s0")
        chunk = dep.blobs.put(b"x" * 100)
        ns = {"st_atime_ns": 1_700_000_000 * 10**9, "st_mtime_ns": 1_700_000_000 * 10**9 + 5,
              "st_ctime_ns": 1_700_000_000 * 10**9 + 7}  # fmt: skip
        st = os.stat_result((0o100644, 0, 0, 1, 0, 0, 100, 0, 0, 0), ns)
        dst = os.stat_result((0o40755, 0, 0, 2, 0, 0, 0, 0, 0, 0), ns)
        for d in range(files // PER_DIR):
            parent = tree.add(ROOT, b"d%06d" % d, dst, {})
            for f in range(PER_DIR):
                tree.add(parent, b"file-%06d.txt" % f, st, {}, content=[(chunk, 100)])
            if d % 100 == 99:
                tree.commit()
                tree.trim(0)
        dep.flush()
        tree.commit()
    for n in range(1, sources):
        with Deployment.open(data) as dep:
            sid = dep.add_source(f"s{n}").id
        copy_rows(data / "catalog.db", sid)
    done.touch()


def copy_rows(catalog: Path, sid: int) -> None:
    import sqlite3

    db = sqlite3.connect(catalog)
    with db:
        cols = [r[1] for r in db.execute("PRAGMA table_info(inodes)") if r[1] != "source_id"]
        db.execute(f"INSERT INTO inodes (source_id, {', '.join(cols)}) SELECT ?, {', '.join(cols)} FROM inodes "
                   "WHERE source_id = 1", (sid,))  # fmt: skip
        db.execute("INSERT INTO dirents (source_id, parent, name, ino) SELECT ?, parent, name, ino FROM dirents "
                   "WHERE source_id = 1", (sid,))  # fmt: skip
        db.execute("UPDATE sources SET next_ino = (SELECT next_ino FROM sources WHERE id = 1) WHERE id = ?", (sid,))
    db.close()


def walk(tree: WorkingTree) -> int:
    dirs, seen = [ROOT], 0
    while dirs:
        for _name, st in tree.listdir(dirs.pop()):
            seen += 1
            if st.mode & 0o170000 == 0o040000:
                dirs.append(st.ino)
    return seen


def child(data: Path, what: str, sources: int) -> dict[str, float]:
    with Deployment.open(data) as dep:
        if what == "per inode":
            tracemalloc.start()
            tree = dep.working_tree("s0")
            before = tracemalloc.get_traced_memory()[0]
            walk(tree)
            used = tracemalloc.get_traced_memory()[0] - before
            return {"bytes per inode": used / tree.loaded, "inodes": tree.loaded, "peak RSS MB": peak_rss()}
        if what == "walked":
            dep.start_flusher()  # commits and trims every half second, as in `cairn serve`
        start = time.monotonic()
        for n in range(sources):
            tree = dep.working_tree(f"s{n}")
            if what == "idle":
                names = tree.names(ROOT)
                tree.stat(tree.lookup(tree.lookup(ROOT, names[0]).ino, b"file-000000.txt").ino)
            else:
                walk(tree)
        took = time.monotonic() - start
        loaded = sum(t.loaded for t in dep.worktrees.loaded())
    return {"peak RSS MB": peak_rss(), "seconds": took, "inodes loaded": loaded}


def peak_rss() -> float:
    """This process's peak RSS in MB: VmHWM, not ru_maxrss (Linux carries that over from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = OUT / "cache" / f"trees-{args.files}x{args.sources}"
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1], args.sources)))
        return
    t = time.monotonic()
    build(data, args.files, args.sources)
    print(f"catalog ready ({time.monotonic() - t:.0f} s): {args.sources} sources of {args.files} files", flush=True)
    results: dict[str, list[dict[str, float]]] = {"per inode": [], "idle": [], "walked": []}
    for run in range(args.runs):
        for what in results:
            out = subprocess.run(
                [sys.executable, __file__, "--sources", str(args.sources), "--child", str(data), what],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            results[what].append(json.loads(out.stdout.splitlines()[-1]))
            print(run + 1, what, results[what][-1], flush=True)
    medians = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w, rs in results.items()}
    print(json.dumps(medians, indent=1))
    (OUT / "tree.json").write_text(json.dumps({"files": args.files, "sources": args.sources, "medians": medians,
                                               "runs": results}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
