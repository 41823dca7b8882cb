"""Engine benchmark: cairn backup against restic 0.14 on real files, plus the raw one-core rate.

Steps, each backed up by `cairn backup` and by `restic backup --compression auto`
from the same directory in the same state (cairn runs first, then restic; the
step's input is read once beforehand so both find it in the page cache):

  1-5  django 4.2.1 .. 4.2.5: the sdists, rsync'd in turn into ONE working
       directory (rsync -a --delete keeps unchanged files' inode and mtime),
       as successive nightlies of one source;
  6    docs: /usr/share/doc plus django 4.2.1, copied into one directory;
  7    big: a 1 GiB file, alternating 16 MiB segments of seeded Python-source
       text and os.urandom;
  8    django again, nothing changed.

Per step and tool: wall and CPU seconds (user+sys of the child), files/s and
MB/s of the step's input (MB = 10^6 bytes), pool/repository bytes afterwards,
and the ratio cumulative input bytes / pool bytes. The raw rate is FastCDC +
keyed BLAKE3 + zstd-3 on one thread over the 1 GiB file and the django tree,
read from the page cache. Figures are printed and written to bench/out/engine.json.
"""

from __future__ import annotations

import argparse
import json
import mmap
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
SEGMENT = 16 << 20
BIG_SIZE = 1 << 30
TARGET_UNCHANGED_FPS = 20_000


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def fetch_django(cache: Path) -> dict[str, Path]:
    """Download and unpack the sdists once; reruns reuse bench/out/cache."""
    trees = {}
    for v in VERSIONS:
        sdist, tree = cache / f"Django-{v}.tar.gz", cache / "unpacked" / f"Django-{v}"
        if not sdist.exists():
            sh(
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"django=={v}",
                "-d",
                str(cache),
            )
        if not tree.exists():
            with tarfile.open(sdist) as tf:  # the "tar" filter keeps mtimes and modes
                tf.extractall(tree.parent, filter="tar")
        trees[v] = tree
    return trees


def make_big_file(cache: Path, text_source: Path, seed: int = 42) -> Path:
    """1 GiB: alternating segments of seeded text (lines of Python source) and urandom."""
    path = cache / f"mixed-1g-seed{seed}.bin"
    if path.exists() and path.stat().st_size == BIG_SIZE:
        return path
    lines = [ln for f in sorted(text_source.rglob("*.py")) for ln in f.read_bytes().splitlines(True)]
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for i in range(BIG_SIZE // SEGMENT):
            if i % 2:
                out.write(os.urandom(SEGMENT))
                continue
            buf = bytearray()
            while len(buf) < SEGMENT:
                buf += b"".join(rng.choices(lines, k=4096))
            out.write(buf[:SEGMENT])
    tmp.rename(path)
    return path


def tree_size(root: Path) -> tuple[int, int]:
    """(regular files, their bytes) under root, not following symlinks."""
    files = size = 0
    for d, _, names in os.walk(root):
        for n in names:
            st = os.lstat(os.path.join(d, n))
            if st.st_mode & 0o170000 == 0o100000:
                files, size = files + 1, size + st.st_size
    return files, size


def warm(root: Path) -> None:
    """Read every file once so both tools find the step's input in the page cache."""
    if root.is_file():
        with open(root, "rb") as f:
            while f.read(8 << 20):
                pass
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    while f.read(8 << 20):
                        pass


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc


def cairn_step(data: Path, source: str, path: Path, snap: str) -> tuple[float, float, dict]:
    wall, cpu, p = timed([CAIRN, "--data", str(data), "backup", source, str(path), "--snapshot", snap, "--json"])
    info = {"rc": p.returncode, "stderr": p.stderr.decode(errors="replace")[-2000:]}
    if p.returncode == 0:
        out = json.loads(p.stdout)
        info.update({k: out[k] for k in ("files", "dirs", "changed", "removed", "bytes_read", "errors")})
    return wall, cpu, info


def restic_step(env: dict, source: str, path: Path) -> tuple[float, float, dict]:
    cmd = [RESTIC, "backup", "--json", "--compression", "auto", "--host", "bench", "--tag", source, str(path)]
    wall, cpu, p = timed(cmd, env)
    info = {"rc": p.returncode, "stderr": p.stderr.decode(errors="replace")[-2000:]}
    for line in p.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("message_type") == "summary":
            info.update(
                {
                    k: msg.get(k)
                    for k in ("files_new", "files_changed", "files_unmodified", "data_added", "total_bytes_processed")
                }
            )
    return wall, cpu, info


def du(root: Path) -> int:
    return sum(os.lstat(os.path.join(d, n)).st_size for d, _, ns in os.walk(root) for n in ns)


def run_once(work: Path, trees: dict[str, Path], big: Path) -> dict:
    """One full pass of all steps with a fresh cairn data dir and restic repo."""
    data, repo, django = work / "cairn", work / "restic", work / "src" / "django"
    env = dict(
        os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(repo), RESTIC_CACHE_DIR=str(work / "restic-cache")
    )
    sh(RESTIC, "init", "--repository-version", "2", env=env, capture_output=True)
    django.mkdir(parents=True)

    def prep_django(v: str) -> Path:
        sh("rsync", "-a", "--delete", f"{trees[v]}/", f"{django}/")
        return django

    def prep_docs() -> Path:
        docs = work / "src" / "docs"
        docs.mkdir()
        sh("cp", "-a", "/usr/share/doc", str(docs / "doc"))
        sh("cp", "-a", str(trees[VERSIONS[0]]), str(docs / f"Django-{VERSIONS[0]}"))
        return docs

    def prep_big() -> Path:
        d = work / "src" / "big"
        d.mkdir()
        shutil.copyfile(big, d / big.name)
        return d

    steps = [(f"django {v}", "django", v, lambda v=v: prep_django(v)) for v in VERSIONS]
    steps += [
        ("docs + django 4.2.1", "docs", "docs", prep_docs),
        ("1 GiB mixed file", "big", "big", prep_big),
        (f"django {VERSIONS[-1]} unchanged", "django", f"{VERSIONS[-1]}-again", lambda: django),
    ]
    rows, cumulative = [], 0
    for label, source, snap, prep in steps:
        path = prep()
        files, size = tree_size(path)
        cumulative += size
        warm(path)
        row = {"step": label, "source": source, "files": files, "bytes": size, "cumulative_bytes": cumulative}
        for tool, store in (("cairn", data / "pool"), ("restic", repo)):
            if tool == "cairn":
                wall, cpu, info = cairn_step(data, source, path, snap)
            else:
                wall, cpu, info = restic_step(env, source, path)
            pool = du(store)
            row[tool] = {
                "wall_s": wall,
                "cpu_s": cpu,
                "files_per_s": files / wall,
                "mb_per_s": size / wall / 1e6,
                "pool_bytes": pool,
                "ratio": cumulative / pool if pool else None,
                **info,
            }
        row["cairn"]["catalog_bytes"] = (data / "catalog.db").stat().st_size
        rows.append(row)
        print(f"  {label}: cairn {row['cairn']['wall_s']:.2f}s, restic {row['restic']['wall_s']:.2f}s", flush=True)
    t0 = time.perf_counter()
    check = subprocess.run([CAIRN, "--data", str(data), "pool", "check", "--json"], capture_output=True)
    check_info = {
        "rc": check.returncode,
        "wall_s": time.perf_counter() - t0,
        "out": check.stdout.decode(errors="replace")[-2000:],
        "stderr": check.stderr.decode()[-2000:],
    }
    return {"steps": rows, "pool_check": check_info}


def raw_rate(paths: list[Path]) -> dict:
    """FastCDC + keyed BLAKE3 + zstd-3 on one thread; files are read from the page cache (mmap)."""
    cdc = FastCDC(768 << 10, min_size=256 << 10, max_size=4 << 20)
    key, zc = bytes(range(32)), zstandard.ZstdCompressor(level=3)
    total = out = chunks = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for p in paths:
        size = p.stat().st_size
        if size == 0:
            continue
        with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = memoryview(m)
            for c in cdc.cut_buf(view):
                chunk = view[c.offset : c.offset + c.length]
                blake3.blake3(chunk, key=key).digest()
                out += len(zc.compress(chunk))
                chunks += 1
            view.release()
        total += size
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "bytes": total,
        "chunks": chunks,
        "compressed_bytes": out,
        "wall_s": wall,
        "cpu_s": cpu,
        "mb_per_s": total / wall / 1e6,
    }


def files_under(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()]


def median_runs(runs: list[dict]) -> list[dict]:
    """Per step, the median of every numeric figure over the runs (the first run's other fields)."""
    steps = [dict(s) for s in runs[0]["steps"]]
    for i, step in enumerate(steps):
        for tool in ("cairn", "restic"):
            step[tool] = dict(step[tool])
            for k, v in step[tool].items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
                    step[tool][k] = statistics.median(r["steps"][i][tool][k] for r in runs)
    return steps


def report(steps: list[dict], raw: dict, check: dict, runs: int) -> dict:
    big_raw = raw["1 GiB file"]["mb_per_s"]
    hdr = (
        f"{'step':<26}{'tool':<7}{'files':>7}{'MB in':>8}{'wall s':>8}{'cpu s':>7}{'files/s':>9}{'MB/s':>8}"
        f"{'pool MB':>9}{'ratio':>7}  target"
    )
    print(f"\nBackup steps (median of {runs} run(s); cairn ran first, then restic, inputs warm in page cache)")
    print(hdr + "\n" + "-" * len(hdr))
    targets = []
    for s in steps:
        c, r = s["cairn"], s["restic"]
        for tool, t in (("cairn", c), ("restic", r)):
            note = ""
            if tool == "cairn":
                ok = c["wall_s"] <= r["wall_s"]
                note = f"wall <= restic: {'OK' if ok else 'MISS'}"
                targets.append(
                    {
                        "target": f"{s['step']}: cairn wall <= restic wall",
                        "ok": ok,
                        "cairn": c["wall_s"],
                        "restic": r["wall_s"],
                    }
                )
                if s["step"] == "1 GiB mixed file":
                    ok = c["mb_per_s"] >= 0.8 * big_raw
                    note += f"; >= 0.8x raw ({0.8 * big_raw:.0f} MB/s): {'OK' if ok else 'MISS'}"
                    targets.append(
                        {
                            "target": "1 GiB file >= 0.8x raw one-core rate",
                            "ok": ok,
                            "cairn_mb_s": c["mb_per_s"],
                            "raw_mb_s": big_raw,
                        }
                    )
                if s["step"].endswith("unchanged"):
                    ok = c["files_per_s"] >= TARGET_UNCHANGED_FPS
                    note += f"; >= {TARGET_UNCHANGED_FPS} files/s: {'OK' if ok else 'MISS'}"
                    targets.append(
                        {"target": "unchanged re-backup >= 20,000 files/s", "ok": ok, "cairn_files_s": c["files_per_s"]}
                    )
                if c.get("rc") != 0 or c.get("errors"):
                    note += f"; rc={c.get('rc')} errors={len(c.get('errors') or [])}"
            elif t.get("rc") != 0:
                note = f"rc={t.get('rc')}"
            ratio = f"{t['ratio']:.2f}" if t["ratio"] else "-"
            print(
                f"{s['step'] if tool == 'cairn' else '':<26}{tool:<7}{s['files']:>7}{s['bytes'] / 1e6:>8.1f}"
                f"{t['wall_s']:>8.2f}{t['cpu_s']:>7.2f}{t['files_per_s']:>9.0f}{t['mb_per_s']:>8.1f}"
                f"{t['pool_bytes'] / 1e6:>9.1f}{ratio:>7}  {note}"
            )
    last = steps[-1]
    cp, rp = last["cairn"]["pool_bytes"], last["restic"]["pool_bytes"]
    ok = cp <= 1.05 * rp
    targets.append({"target": "cairn pool bytes <= 1.05x restic repo", "ok": ok, "cairn": cp, "restic": rp})
    print(
        f"\nFinal size: cairn pool {cp / 1e6:.1f} MB (+ catalog.db {last['cairn']['catalog_bytes'] / 1e6:.1f} MB), "
        f"restic repo {rp / 1e6:.1f} MB: {cp / rp:.3f}x, target <= 1.05x: {'OK' if ok else 'MISS'}"
    )
    print("\nRaw one-core FastCDC(768K avg mask, 256K-4M) + keyed BLAKE3 + zstd-3:")
    for name, r in raw.items():
        print(
            f"  {name:<22}{r['bytes'] / 1e6:>9.1f} MB  {r['chunks']:>6} chunks  {r['wall_s']:>6.2f} s wall "
            f"{r['cpu_s']:>6.2f} s cpu  {r['mb_per_s']:>7.1f} MB/s  (zstd out {r['compressed_bytes'] / 1e6:.1f} MB)"
        )
    print(f"\ncairn pool check: rc={check['rc']} in {check['wall_s']:.2f}s: {check['out'].strip()[:300]}")
    print("\nTargets: " + ", ".join(f"{t['target']}: {'OK' if t['ok'] else 'MISS'}" for t in targets))
    return {"targets": targets}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=1, help="full passes; figures are per-step medians")
    ap.add_argument("--cache", type=Path, default=OUT / "cache", help="sdists, unpacked trees, the 1 GiB file")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()), help="parent of the temp work dir")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    trees = fetch_django(args.cache)
    big = make_big_file(args.cache, trees[VERSIONS[0]])
    runs = []
    for i in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="cairn-bench-", dir=args.work))
        try:
            print(f"run {i + 1}/{args.runs} in {work}", flush=True)
            runs.append(run_once(work, trees, big))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    warm(trees[VERSIONS[0]])
    warm(big)
    raw = {"1 GiB file": raw_rate([big]), f"django {VERSIONS[0]} tree": raw_rate(files_under(trees[VERSIONS[0]]))}
    steps = median_runs(runs)
    result = report(steps, raw, runs[-1]["pool_check"], args.runs)
    result.update(
        {
            "runs": args.runs,
            "order": "per step: input prepared, read once (warm), cairn, then restic",
            "restic": subprocess.run([RESTIC, "version"], capture_output=True, text=True).stdout.strip(),
            "steps": steps,
            "raw_one_core": raw,
            "pool_check": runs[-1]["pool_check"],
            "all_runs": runs if args.runs > 1 else None,
        }
    )
    OUT.mkdir(exist_ok=True)
    (OUT / "engine.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {OUT / 'engine.json'}")


if __name__ == "__main__":
    main()
