"""Engine benchmark: cairn backup against restic 0.14 on real files, plus the raw one-core rate.

Steps, each backed up by `cairn backup` and by `restic backup --compression auto`
from the same directory in the same state (per step: the input is prepared,
read once so it is warm in the page cache, synced, then cairn runs, then restic;
`restic init` and the creation of cairn's data directory are not timed):

  1-5  django 4.2.1 .. 4.2.5: the sdists, rsync'd in turn into ONE working
       directory (rsync -a --delete keeps files whose size and mtime match),
       as successive nightlies of one source. Each sdist gives every file a
       new mtime and owner (uid 1000 or 1001), so every file looks modified to
       both tools; --checksum (rsync -rlpD -c: no times, no owners) leaves files
       of equal content untouched, as a git checkout would;
  6    docs: /usr/share/doc plus django 4.2.1, copied into one directory;
  7    big: a 1 GiB file, alternating 16 MiB segments of seeded Python-source
       text and os.urandom, in a directory of its own;
  8    django 4.2.5 again, nothing changed.

Per step and tool: wall and CPU seconds (user+sys of the child), files/s and
MB/s of the step's input (MB = 10^6 bytes), pool (cairn: DATA/pool) or
repository bytes afterwards, and the ratio cumulative input bytes / those bytes.
The raw rate is FastCDC + keyed BLAKE3 + zstd-3 on one thread, over the 1 GiB
file and over the django 4.2.1 files (read into memory first, not timed).
Prints a table and writes bench/out/engine.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import blake3
import zstandard
from pyfastcdc import FastCDC

OUT = Path(__file__).resolve().parent / "out"
VERSIONS = ["4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.2.5"]
CAIRN = str(Path(sys.executable).with_name("cairn"))
RESTIC = "/usr/bin/restic"
SEGMENT, BIG_SIZE = 16 << 20, 1 << 30
BIG_STEP, UNCHANGED_STEP = "1 GiB mixed file", f"django {VERSIONS[-1]} unchanged"


def sh(*cmd: str, **kw: object) -> None:
    subprocess.run(cmd, check=True, **kw)


def fetch_django(cache: Path) -> dict[str, Path]:
    """Download and unpack the sdists once; reruns reuse the cache."""
    trees = {}
    for v in VERSIONS:
        sdist, tree = cache / f"Django-{v}.tar.gz", cache / "unpacked" / f"Django-{v}"
        if not sdist.exists():
            pip = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps"]
            sh(*pip, f"django=={v}", "-d", str(cache))
        if not tree.exists():
            with tarfile.open(sdist) as tf:  # the "tar" filter keeps mtimes and modes
                tf.extractall(tree.parent, filter="tar")
        trees[v] = tree
    return trees


def make_big_file(cache: Path, text_source: Path, seed: int = 42) -> Path:
    """1 GiB: alternating segments of seeded text (lines of Python source) and urandom; cached."""
    path = cache / f"mixed-1g-seed{seed}.bin"
    if path.exists() and path.stat().st_size == BIG_SIZE:
        return path
    lines = [ln for f in sorted(text_source.rglob("*.py")) for ln in f.read_bytes().splitlines(True)]
    rng = random.Random(seed)
    with open(path.with_suffix(".tmp"), "wb") as out:
        for i in range(BIG_SIZE // SEGMENT):
            buf = bytearray(os.urandom(SEGMENT) if i % 2 else b"")
            while len(buf) < SEGMENT:
                buf += b"".join(rng.choices(lines, k=4096))
            out.write(buf[:SEGMENT])
    path.with_suffix(".tmp").rename(path)
    return path


def regular_files(root: Path) -> list[Path]:
    """Regular files under root (or root itself), not following symlinks."""
    if root.is_file():
        return [root]
    found = [Path(d, n) for d, _, names in os.walk(root) for n in names]
    return sorted(p for p in found if p.is_file() and not p.is_symlink())


def warm(root: Path) -> None:
    """Read every file once so both tools find the step's input in the page cache."""
    for p in regular_files(root):
        with open(p, "rb") as f:
            while f.read(8 << 20):
                pass


def du(root: Path) -> int:
    return sum(os.lstat(os.path.join(d, n)).st_size for d, _, names in os.walk(root) for n in names)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, object], bytes]:
    """Run cmd; wall seconds, user+sys seconds of the child, return code and stderr tail."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    stderr = proc.stderr.decode("utf-8", "replace")[-2000:]
    return {"wall_s": wall, "cpu_s": cpu, "rc": proc.returncode, "stderr": stderr}, proc.stdout


def cairn_step(data: Path, source: str, path: Path, snap: str) -> dict[str, object]:
    info, out = timed([CAIRN, "--data", str(data), "backup", source, str(path), "--snapshot", snap, "--json"])
    if info["rc"] == 0:
        doc = json.loads(out)
        info.update({k: doc[k] for k in ("files", "dirs", "changed", "removed", "bytes_read", "errors")})
    return info


def restic_step(env: dict[str, str], source: str, path: Path) -> dict[str, object]:
    cmd = [RESTIC, "backup", "--json", "--compression", "auto", "--host", "bench", "--tag", source, str(path)]
    info, out = timed(cmd, env)
    keys = ("files_new", "files_changed", "files_unmodified", "data_added", "total_bytes_processed")
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("message_type") == "summary":
            info.update({k: msg.get(k) for k in keys})
    return info


def run_once(work: Path, trees: dict[str, Path], big: Path, rsync: list[str]) -> dict[str, object]:
    """One full pass of all steps with a fresh cairn data dir and restic repo."""
    data, repo, src = work / "cairn", work / "restic", work / "src"
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(repo))
    env["RESTIC_CACHE_DIR"] = str(work / "restic-cache")
    sh(RESTIC, "init", "--repository-version", "2", env=env, capture_output=True)
    sh(CAIRN, "--data", str(data), "source", "list", capture_output=True)  # creates catalog and pool, untimed too
    (src / "django").mkdir(parents=True)
    (src / "big").mkdir()

    def prep(step: str) -> Path:
        if step.startswith("docs"):
            (src / "docs").mkdir()
            sh("cp", "-a", "/usr/share/doc", str(src / "docs" / "doc"))
            sh("cp", "-a", str(trees[VERSIONS[0]]), str(src / "docs" / f"Django-{VERSIONS[0]}"))
            return src / "docs"
        if step == BIG_STEP:
            shutil.copyfile(big, src / "big" / big.name)
            return src / "big"
        if step != UNCHANGED_STEP:
            sh(*rsync, f"{trees[step.split()[1]]}/", f"{src / 'django'}/")
        return src / "django"

    steps = [(f"django {v}", "django", v) for v in VERSIONS]
    steps += [(f"docs + django {VERSIONS[0]}", "docs", "docs"), (BIG_STEP, "big", "big")]
    steps += [(UNCHANGED_STEP, "django", f"{VERSIONS[-1]}-again")]
    rows: list[dict[str, object]] = []
    cumulative = 0
    for label, source, snap in steps:
        path = prep(label)
        files = regular_files(path)
        size = sum(p.stat().st_size for p in files)
        cumulative += size
        warm(path)
        os.sync()  # the copy's writeback must not overlap the measurements
        row: dict[str, object] = {"step": label, "source": source, "files": len(files), "bytes": size}
        row["cumulative_bytes"] = cumulative
        for tool, store in (("cairn", data / "pool"), ("restic", repo)):
            info = cairn_step(data, source, path, snap) if tool == "cairn" else restic_step(env, source, path)
            wall, pool = float(info["wall_s"]), du(store)
            info.update({"files_per_s": len(files) / wall, "mb_per_s": size / wall / 1e6, "pool_bytes": pool})
            info["ratio"] = cumulative / pool if pool else None
            row[tool] = info
        row["cairn"]["catalog_bytes"] = (data / "catalog.db").stat().st_size
        rows.append(row)
        print(f"  {label}: cairn {row['cairn']['wall_s']:.2f}s, restic {row['restic']['wall_s']:.2f}s", flush=True)
    check, out = timed([CAIRN, "--data", str(data), "pool", "check", "--json"])
    check["out"] = out.decode("utf-8", "replace")[-2000:]
    return {"steps": rows, "pool_check": check}


def raw_rate(paths: list[Path]) -> dict[str, float]:
    """FastCDC + keyed BLAKE3 + zstd-3 on this thread; the files are read into memory first, untimed."""
    cdc = FastCDC(768 << 10, min_size=256 << 10, max_size=4 << 20)
    key, zc = bytes(range(32)), zstandard.ZstdCompressor(level=3)
    blobs = [p.read_bytes() for p in paths]
    out = chunks = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for data in blobs:
        view = memoryview(data)
        for c in cdc.cut_buf(view):
            chunk = view[c.offset : c.offset + c.length]
            blake3.blake3(chunk, key=key).digest()
            out += len(zc.compress(chunk))
            chunks += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    total = sum(map(len, blobs))
    rate = total / wall / 1e6
    return {"bytes": total, "chunks": chunks, "zstd_bytes": out, "wall_s": wall, "cpu_s": cpu, "mb_per_s": rate}


def median_runs(runs: list[dict]) -> list[dict]:
    """Per step, the median of each numeric figure over the runs; other fields from the first run."""
    steps = [dict(s) for s in runs[0]["steps"]]
    for i, step in enumerate(steps):
        for tool in ("cairn", "restic"):
            step[tool] = dict(step[tool])
            for k, v in step[tool].items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "rc":
                    step[tool][k] = statistics.median(r["steps"][i][tool][k] for r in runs)
    return steps


def targets(steps: list[dict], raw: dict) -> list[dict]:
    """The issue's targets, each with the figures it compares."""
    out = []
    for s in steps:
        c, r = s["cairn"], s["restic"]
        out.append({"target": f"{s['step']}: cairn wall <= restic wall", "ok": c["wall_s"] <= r["wall_s"]})
    big = next(s["cairn"] for s in steps if s["step"] == BIG_STEP)
    need = 0.8 * raw["1 GiB file"]["mb_per_s"]
    out.append({"target": f"1 GiB file >= 0.8x raw one-core rate ({need:.0f} MB/s)", "ok": big["mb_per_s"] >= need})
    unchanged = next(s["cairn"] for s in steps if s["step"] == UNCHANGED_STEP)
    out.append({"target": "unchanged re-backup >= 20,000 files/s", "ok": unchanged["files_per_s"] >= 20_000})
    cp, rp = steps[-1]["cairn"]["pool_bytes"], steps[-1]["restic"]["pool_bytes"]
    out.append({"target": f"final pool <= 1.05x restic repo (is {cp / rp:.3f}x)", "ok": cp <= 1.05 * rp})
    return out


def report(steps: list[dict], raw: dict, check: dict, runs: int, goals: list[dict]) -> None:
    cols = f"{'step':<24}{'tool':<7}{'files':>7}{'MB in':>8}{'wall s':>8}{'cpu s':>7}{'files/s':>9}{'MB/s':>8}"
    cols += f"{'pool MB':>9}{'ratio':>7}  notes"
    print(
        f"\nBackup steps (median of {runs} run(s); per step: warm input, cairn, then restic)\n{cols}\n{'-' * len(cols)}"
    )
    for s in steps:
        for tool in ("cairn", "restic"):
            t = s[tool]
            note = "" if t["rc"] == 0 and not t.get("errors") else f"rc={t['rc']} errors={t.get('errors')}"
            if tool == "cairn":
                note += f" {t['changed']} changed, {t['bytes_read'] / 1e6:.1f} MB read" if t["rc"] == 0 else ""
            else:
                note += f" +{(t.get('data_added') or 0) / 1e6:.1f} MB added"
            ratio = f"{t['ratio']:.2f}" if t["ratio"] else "-"
            line = f"{s['step'] if tool == 'cairn' else '':<24}{tool:<7}{s['files']:>7}{s['bytes'] / 1e6:>8.1f}"
            line += f"{t['wall_s']:>8.2f}{t['cpu_s']:>7.2f}{t['files_per_s']:>9.0f}{t['mb_per_s']:>8.1f}"
            print(line + f"{t['pool_bytes'] / 1e6:>9.1f}{ratio:>7} {note}")
    last = steps[-1]["cairn"]
    print(f"\ncairn catalog.db after all steps: {last['catalog_bytes'] / 1e6:.1f} MB (not counted in pool bytes)")
    print("\nRaw one core: FastCDC(768 KiB mask, 256 KiB..4 MiB) + keyed BLAKE3 + zstd-3, input in memory:")
    for name, r in raw.items():
        print(f"  {name:<20}{r['bytes'] / 1e6:>8.1f} MB {r['chunks']:>6} chunks {r['wall_s']:>6.2f} s wall ", end="")
        print(f"{r['cpu_s']:>6.2f} s cpu {r['mb_per_s']:>7.1f} MB/s (zstd out {r['zstd_bytes'] / 1e6:.1f} MB)")
    print(f"\ncairn pool check: rc={check['rc']}, {check['wall_s']:.2f} s: {' '.join(check['out'].split())[:300]}")
    print("\nTargets:")
    for g in goals:
        print(f"  {'OK  ' if g['ok'] else 'MISS'} {g['target']}")


def git(*cmd: str) -> str:
    return subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=OUT.parent).stdout.strip()


def code_hash() -> str:
    """Of the work tree's engine and CLI sources: were they edited while we measured?"""
    return hashlib.sha256(
        b"".join(p.read_bytes() for d in ("engine", "appliance") for p in sorted((OUT.parent / d).rglob("*.py")))
    ).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=1, help="full passes; figures are per-step medians")
    ap.add_argument("--cache", type=Path, default=OUT / "cache", help="sdists, unpacked trees, the 1 GiB file")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()), help="parent of the temp work dir")
    ap.add_argument("--checksum", action="store_true", help="rsync -rlpD -c: like a git checkout")
    ap.add_argument("--rev", help="benchmark this git revision (exported, on PYTHONPATH), not the work tree")
    args = ap.parse_args()

    head, dirty = git("rev-parse", args.rev or "HEAD"), git("status", "--short", "engine", "appliance")
    if args.rev:  # cairn's editable finder comes after PYTHONPATH, so the export wins
        code = Path(tempfile.mkdtemp(prefix="cairn-code-", dir=args.work))
        sh("sh", "-c", f"git -C '{OUT.parent}' archive {head} | tar -x -C '{code}'")
        os.environ["PYTHONPATH"] = str(code)
    code_before = code_hash()
    rsync = ["rsync", "-rlpD", "--checksum", "--delete"] if args.checksum else ["rsync", "-a", "--delete"]
    load = os.getloadavg()
    if load[0] > 0.5:
        print(f"warning: load average {load[0]:.2f} before the run: the figures may suffer", flush=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    trees = fetch_django(args.cache)
    big = make_big_file(args.cache, trees[VERSIONS[0]])
    runs = []
    for i in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="cairn-bench-", dir=args.work))
        try:
            print(f"run {i + 1}/{args.runs} in {work}", flush=True)
            runs.append(run_once(work, trees, big, rsync))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.rev:
        shutil.rmtree(os.environ["PYTHONPATH"], ignore_errors=True)
    raw = {"1 GiB file": raw_rate([big]), f"django {VERSIONS[0]} files": raw_rate(regular_files(trees[VERSIONS[0]]))}
    steps = median_runs(runs)
    goals = targets(steps, raw)
    report(steps, raw, runs[-1]["pool_check"], args.runs, goals)
    moved = not args.rev and code_hash() != code_before
    if moved:
        print("warning: engine/ or appliance/ changed during the run: the cairn figures mix two versions")
    result = {
        "runs": args.runs,
        "order": "per step: input prepared, read once (warm), cairn backup, then restic backup",
        "restic": subprocess.run([RESTIC, "version"], capture_output=True, text=True).stdout.strip(),
        "rsync": rsync,
        "code": head if args.rev else f"work tree, HEAD {head} at the start",
        "engine_uncommitted_at_start": [] if args.rev else dirty.splitlines(),
        "engine_changed_during_run": moved,
        "load_average_before_after": [load, os.getloadavg()],
        "targets": goals,
        "steps": steps,
        "raw_one_core": raw,
        "pool_check": runs[-1]["pool_check"],
        "all_runs": runs if args.runs > 1 else None,
    }
    dest = OUT / ("engine-checksum.json" if args.checksum else "engine.json")
    dest.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {dest}; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
