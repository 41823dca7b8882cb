"""SMB door benchmark: a robocopy stand-in and smbclient through Cairn's share, beside a plain smbd.

Two ways, side by side in one run, each repeated --runs times, as the same account (an admin):
  cairn   \\\\127.0.0.1\\smb-N of `cairn serve --smb`: Cairn's smbd writing into MOUNT/smb-N/current/
  plain   \\\\127.0.0.1\\smb-N of a second smbd with the global settings of Cairn's generated smb.conf
          (less shadow_copy2), the same nss_wrapper users and smbpasswd, its own port and tdb
          directories, sharing a plain directory on local disk: what Samba itself costs here
Clients: tests/robocopy.py (robocopy /MIR /COPY:DAT /DCOPY:T over smbprotocol, in this process), and
Debian's smbclient (C) for the large file, to show what the server does when the client is not the limit.
Steps: a   N small files (0-16 KiB of random bytes, ~N/100 directories) mirrored into smb-N\\small
       b   one large file of random bytes mirrored into smb-N\\large; `b smbclient` puts a second one
           (fresh bytes, so nothing dedups) into put-N
       c   a and b mirrored again as one tree, nothing changed (every file is skipped)
       ra  the a tree restored to local disk (robocopy stand-in)
       rb  the large file restored (robocopy stand-in); `rb smbclient` gets put-N's file
Targets: cairn/plain >= 0.7 at a and c, b >= 100 MB/s into Cairn; reads count as much as writes, so ra
and rb get the same bars. For Cairn also the time from the client's disconnect to its session's
snapshot, less smb_idle (set to 2 s here): `ended` (the session closed), `created` (the snapshot's
time), `listed` (first seen in the catalog, read every 0.05 s).
Every way and run gets fresh sources (smb-N, put-N; plain: directories of the same names) and fresh
random bytes in the same layout; the page cache is dropped before every timed step and the order of
the ways turns by one each run. CPU seconds per kind of process (/proc, as in doors_bench.py) say
where a step's time went: `bench` is the robocopy stand-in (it runs in this process), `smbd` the
server, `cairn serve` the mount and engine, `others` load from outside the benchmark.
Prints a table; writes the same as JSON to bench/out/smb.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from doors_bench import CAIRN, Bench, CpuSampler, _terminated, cairn, free_port, listening, wait_until  # noqa: E402

from appliance.doors import run_dir  # noqa: E402
from appliance.doors import smb as samba  # noqa: E402
from tests.robocopy import MirrorStats, Share, mirror, restore  # noqa: E402

OUT = ROOT / "bench" / "out"
WAYS = ("cairn", "plain")
UNITS = {"a": "files/s", "b": "MB/s", "b smbclient": "MB/s", "c": "files/s",
         "ra": "files/s", "rb": "MB/s", "rb smbclient": "MB/s"}  # fmt: skip
WRITES = ("a", "b", "b smbclient", "c")
RATIO, CAIRN_MBS = 0.7, 100.0  # the targets
RATIO_STEPS, RATE_STEPS = ("a", "c", "ra", "rb"), ("b", "b smbclient", "rb", "rb smbclient")
IDLE = 2  # smb_idle: seconds from the client's disconnect to the end of its session
USER, PASSWORD = "bench", "smb-bench-password-1"
HOST = "127.0.0.1"
# smb.conf keys naming smbd's own directories: the plain smbd gets its own, so no tdb file is shared.
DIRS = {"private dir": "private", "state directory": "state", "cache directory": "cache",
        "lock directory": "lock", "pid directory": "pid", "ncalrpc dir": "ncalrpc"}  # fmt: skip
NOT_PLAIN = ("vfs objects", "shadow:", "root preexec", "root postexec", "path", "comment")  # Cairn's own lines


@dataclass(frozen=True)
class Corpus:
    tree: Path  # small/ (step a) and large/big (step b)
    put: Path  # smbclient's large file (b smbclient)
    small: int
    large_bytes: int

    def amount(self, step: str) -> float:
        return {"a": self.small, "ra": self.small, "c": self.small + 1}.get(step, self.large_bytes / 1e6)


def random_file(path: Path, size: int) -> None:
    """`size` random bytes (AES-CTR of zeros under a fresh key: 4 GB/s, where os.urandom gives 250 MB/s)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    stream = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    zeros = bytes(1 << 20)
    with open(path, "wb") as f:
        for offset in range(0, size, len(zeros)):
            f.write(stream.update(zeros[: min(len(zeros), size - offset)]))


def make_corpus(root: Path, n_small: int, large_mib: int) -> Corpus:
    """Fresh random bytes, in the same layout every time (sizes from one seed): nothing in it dedups."""
    rnd = random.Random(7)
    dirs = max(1, round(n_small / 100))
    tree = root / "tree"
    for d in range(dirs):
        (tree / "small" / f"d{d:03}").mkdir(parents=True)
    for i in range(n_small):
        (tree / "small" / f"d{i % dirs:03}" / f"f{i:05}").write_bytes(os.urandom(rnd.randrange(0, (16 << 10) + 1)))
    (tree / "large").mkdir()
    size = large_mib << 20
    random_file(tree / "large" / "big", size)
    random_file(root / "put.big", size)
    return Corpus(tree, root / "put.big", n_small, size)


def prepare(bench: Bench) -> None:
    """The deployment, the admin account, smb_idle, two sources per run, the ports."""
    cairn(bench, "init")
    cairn(bench, "user", "add", USER, "--admin", "--password-file", "/dev/stdin", stdin=PASSWORD)
    cairn(bench, "config", "set", "smb_idle", str(IDLE))
    for run in range(1, bench.runs + 1):
        cairn(bench, "source", "add", f"smb-{run}")
        cairn(bench, "source", "add", f"put-{run}")
    bench.ports = {name: free_port() for name in ("web", "cairn", "plain")}


def start_serve(bench: Bench) -> Path:
    """`cairn serve` with the mount and the SMB door; Cairn's smb.conf once it serves every source."""
    p, log = bench.ports, bench.work / "serve.log"
    with open(log, "wb") as out:
        bench.procs["serve"] = proc = subprocess.Popen(
            [*CAIRN, "--data", str(bench.data), "serve", "--listen", f"{HOST}:{p['web']}", "--no-tls",
             "--mount", str(bench.mnt), "--smb", f"{HOST}:{p['cairn']}"], stdout=out, stderr=out)  # fmt: skip
    conf = bench.data / "doors" / "smb" / "smb.conf"
    last = f"[put-{bench.runs}]"

    def ready() -> bool:
        text = log.read_text(errors="replace")
        return "mounted at" in text and listening(p["cairn"]) and conf.exists() and last in conf.read_text()

    wait_until(ready, proc, log, "cairn serve")
    return conf


def sections(conf: str) -> list[list[str]]:
    """smb.conf's sections, each its lines from the `[name]` on, less blank lines and comments."""
    out: list[list[str]] = []
    for line in conf.splitlines():
        if line.startswith("["):
            out.append([])
        if out and line.strip() and not line.startswith("#"):
            out[-1].append(line)
    return out


def plain_config(cairn_conf: str, folder: Path, port: int, shares: dict[str, Path]) -> str:
    """Cairn's [global] with this smbd's own port and directories, less shadow_copy2; Cairn's first share
    less its path and hooks, for each plain directory."""
    out, parts = [], sections(cairn_conf)
    for line in parts[0]:
        key = line.partition("=")[0].strip()
        if key.startswith(NOT_PLAIN):
            continue
        out.append(f"smb ports = {port}" if key == "smb ports" else f"{key} = {folder / DIRS[key]}" if key in DIRS
                   else line)  # fmt: skip
    share = [line for line in parts[1][1:] if not line.partition("=")[0].strip().startswith(NOT_PLAIN)]
    for name, path in shares.items():
        out += ["", f"[{name}]", f"path = {path}", *share]
    return "\n".join(out) + "\n"


def start_plain(bench: Bench, cairn_conf: Path) -> None:
    """The plain smbd: Cairn's settings, users and smbpasswd; its own port, directories and shares."""
    folder = bench.work / "plain-smbd"
    for d in DIRS.values():
        (folder / d).mkdir(parents=True, mode=0o700)
    shares = {f"{kind}-{run}": bench.work / "plain" / f"{kind}-{run}"
              for run in range(1, bench.runs + 1) for kind in ("smb", "put")}  # fmt: skip
    conf = folder / "smb.conf"
    conf.write_text(plain_config(cairn_conf.read_text(), folder, bench.ports["plain"], shares))
    log = bench.work / "plain-smbd.log"
    argv = ["/usr/sbin/smbd", "--foreground", "--no-process-group", f"--configfile={conf}", "--debug-stdout"]
    with open(log, "wb") as out:
        bench.procs["plain"] = proc = subprocess.Popen(argv, env=samba.environment(cairn_conf.parent), stdout=out,
                                                       stderr=out, start_new_session=True)  # fmt: skip
    wait_until(lambda: listening(bench.ports["plain"]), proc, log, "the plain smbd")


def stop(bench: Bench, keep: bool) -> None:
    """Stop what the benchmark started, by PID (and the plain smbd's own process group, which holds
    its per-connection processes); leave no mount or run directory, and the work directory only with --keep."""
    if bench._catalog is not None:
        bench._catalog.engine.dispose()
    for name, proc in bench.procs.items():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                print(f"{name} (pid {proc.pid}) ignored SIGTERM; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()
        if name == "plain":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # its session, made by start_new_session
    if os.path.ismount(bench.mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(bench.mnt)], capture_output=True)
    shutil.rmtree(run_dir(bench.data), ignore_errors=True)
    if not keep:
        shutil.rmtree(bench.work, ignore_errors=True)


Work = Callable[[CpuSampler], Any]


def robocopy(port: int, share: str, action: Callable[[Share], Any]) -> Work:
    """A step of the robocopy stand-in: connect, act, disconnect (its TCP connection closed)."""

    def work(sampler: CpuSampler) -> Any:
        with Share(HOST, port, share, USER, PASSWORD) as s:
            return action(s)

    return work


def smbclient(port: int, share: str, command: str) -> Work:
    def work(sampler: CpuSampler) -> Any:
        argv = ["smbclient", f"//{HOST}/{share}", "-p", str(port), "-U", f"{USER}%{PASSWORD}", "-m", "SMB3",
                "-c", command]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sampler.client = proc.pid  # before its first sample: the sampler waits a quarter second
        out, _ = proc.communicate()
        if proc.returncode != 0 or b"NT_STATUS" in out:
            raise SystemExit(f"smbclient {command!r} on {share} failed: {out.decode(errors='replace')}")

    return work


def timed(bench: Bench, work: Work) -> tuple[float, float, dict[str, float], Any]:
    """One step from a cold page cache: its seconds, the wall-clock time the client left, CPU by kind, result."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    sampler = CpuSampler(bench.procs["serve"].pid)
    start = time.perf_counter()
    try:
        result = work(sampler)
    finally:
        seconds, exited = time.perf_counter() - start, time.time()
        cpu = sampler.stop()
    return seconds, exited, cpu, result


def settle(bench: Bench, source: str, after: int, exited: float, timeout: float = 600) -> dict[str, Any] | None:
    """Wait for the source's next session to end in a snapshot: its times after the client's exit, less
    smb_idle. None if no session began (a session begins by the disconnect, whose hook credits the writes).
    Read from the catalog every 0.05 s: the CLI takes a second and a half to start, too coarse for this."""
    from engine import snapshots
    from engine.sessions import Sessions

    sessions = Sessions(bench.catalog(), "smb-bench")
    begun, deadline = time.monotonic() + IDLE + 8, time.monotonic() + timeout
    while True:
        new = [s for s in sessions.recent(source, 5) if s.id > after]
        if new and (new[0].state == "failed" or new[0].snapshot):
            listed = time.time()
            break
        if not new and time.monotonic() > begun:
            return None
        if time.monotonic() > deadline:
            raise SystemExit(f"no snapshot of {source} {timeout:.0f} s after its session")
        time.sleep(0.05)
    session = new[0]
    if session.state != "done" or session.ended is None:
        raise SystemExit(f"session {session.id} of {source} failed: {session.reason}")
    with bench.catalog().engine.connect() as conn:
        created = next(s.created for s in snapshots.list_rows(conn, source) if s.name == session.snapshot)
    late = exited + IDLE
    return {"session": session.id, "snapshot": session.snapshot, "ended": round(session.ended - late, 3),
            "created": round(created - late, 3), "listed": round(listed - late, 3)}  # fmt: skip


def confirm(bench: Bench, rows: list[dict[str, Any]]) -> None:
    """Every session the benchmark timed is in `cairn session list`, done, with the snapshot it saw."""
    listed = {s["id"]: s for s in json.loads(cairn(bench, "session", "list", "--json", "--limit", "10000"))}
    for row in rows:
        d = row.get("delay")
        s = listed.get(d["session"], {}) if d else {}
        if d and (s.get("state"), s.get("snapshot"), s.get("source")) != ("done", d["snapshot"], row["share"]):
            raise SystemExit(f"session {d['session']} is listed as {s}, not done with snapshot {d['snapshot']}")


def plan(bench: Bench, way: str, run: int, corpus: Corpus, back: Path) -> list[tuple[str, str, Work]]:
    """(step, share, work) of one way and run, in order."""
    port, mirrored, put = bench.ports[way], f"smb-{run}", f"put-{run}"
    tree = corpus.tree
    return [
        ("a", mirrored, robocopy(port, mirrored, lambda s: mirror(s, tree / "small", "small"))),
        ("b", mirrored, robocopy(port, mirrored, lambda s: mirror(s, tree / "large", "large"))),
        ("b smbclient", put, smbclient(port, put, f"put {corpus.put} big")),
        ("c", mirrored, robocopy(port, mirrored, lambda s: mirror(s, tree, ""))),
        ("ra", mirrored, robocopy(port, mirrored, lambda s: restore(s, "small", back / "small"))),
        ("rb", mirrored, robocopy(port, mirrored, lambda s: restore(s, "large", back / "large"))),
        ("rb smbclient", put, smbclient(port, put, f"get big {back / 'big'}")),
    ]


def check(step: str, result: Any, corpus: Corpus, back: Path) -> str | None:
    """What is wrong with a step's outcome (wrong counts, restored bytes that differ), if anything."""
    if isinstance(result, MirrorStats):
        want = {"a": corpus.small, "b": 1, "c": 0}[step]
        if result.files_copied != want or result.failures_retried:
            return f"copied {result.files_copied} files (not {want}), {result.failures_retried} retried"
    if step == "ra":
        files = [p for p in (back / "small").rglob("*") if p.is_file()]
        sizes = sum(p.stat().st_size for p in files)
        want = sum(p.stat().st_size for p in (corpus.tree / "small").rglob("f*"))
        if len(files) != corpus.small or sizes != want:
            return f"restored {len(files)} files, {sizes} bytes (not {corpus.small}, {want})"
    pairs = {"rb": (back / "large" / "big", corpus.tree / "large" / "big"), "rb smbclient": (back / "big", corpus.put)}
    if step in pairs and subprocess.run(["cmp", "-s", *map(str, pairs[step])]).returncode != 0:
        return "the restored large file differs"
    return None


def run_way(bench: Bench, way: str, run: int, corpus: Corpus) -> list[dict[str, Any]]:
    """Every step of one way and run, into fresh sources (or plain directories), then its reads."""
    back = bench.work / "restored"
    if way == "plain":
        for kind in ("smb", "put"):
            (bench.work / "plain" / f"{kind}-{run}").mkdir(parents=True)
    rows, last = [], 0
    for step, share, work in plan(bench, way, run, corpus, back):
        load = os.getloadavg()[0]
        seconds, exited, cpu, result = timed(bench, work)
        row: dict[str, Any] = {"way": way, "run": run, "step": step, "share": share, "seconds": round(seconds, 3),
                               "rate": round(corpus.amount(step) / seconds, 1), "cpu": cpu, "load": load}  # fmt: skip
        wrong = check(step, result, corpus, back)
        if wrong:
            raise SystemExit(f"{way} run {run} step {step}: {wrong}")
        if way == "cairn" and step in WRITES:
            row["delay"] = settle(bench, share, last, exited)
            last = row["delay"]["session"] if row["delay"] else last
        print(f"run {run} {way:5} {step:12}: {row['rate']:9.1f} {UNITS[step]:7} in {seconds:7.2f} s "
              f"{row.get('delay', '')} cpu {cpu}", file=sys.stderr, flush=True)  # fmt: skip
        rows.append(row)
    shutil.rmtree(back)
    if way == "plain":
        for kind in ("smb", "put"):
            shutil.rmtree(bench.work / "plain" / f"{kind}-{run}")
    return rows


def run_all(bench: Bench, n_small: int, large_mib: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for run in range(1, bench.runs + 1):
        turn = (run - 1) % len(WAYS)
        for way in WAYS[turn:] + WAYS[:turn]:
            corpus = make_corpus(bench.work / "corpus", n_small, large_mib)
            try:
                rows += run_way(bench, way, run, corpus)
            finally:
                shutil.rmtree(bench.work / "corpus")
    return rows


def summarise(rows: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Every run's rate, the medians, cairn/plain, the disconnect-to-snapshot delays, CPU by kind."""
    rates: dict[str, dict[str, Any]] = {}
    for step, unit in UNITS.items():
        rates[step] = {"unit": unit}
        for way in WAYS:
            runs = [r["rate"] for r in rows if r["way"] == way and r["step"] == step]
            rates[step][way] = {"runs": runs, "median": statistics.median(runs)}
        rates[step]["cairn/plain"] = round(rates[step]["cairn"]["median"] / rates[step]["plain"]["median"], 3)
    delays: dict[str, Any] = {}
    for step in WRITES:
        got = [r["delay"] for r in rows if r["way"] == "cairn" and r["step"] == step and r["delay"]]
        delays[step] = {k: {"runs": [d[k] for d in got], "median": statistics.median([d[k] for d in got] or [0])}
                        for k in ("ended", "created", "listed")}  # fmt: skip
        delays[step]["sessions"] = len(got)
    cpu: dict[str, dict[str, dict[str, float]]] = {}
    for way in WAYS:
        for step in UNITS:
            picked = [r for r in rows if r["way"] == way and r["step"] == step]
            kinds = sorted({k for r in picked for k in r["cpu"]})
            med = {k: statistics.median(r["cpu"].get(k, 0.0) for r in picked) for k in kinds}
            med["wall"] = statistics.median(r["seconds"] for r in picked)
            cpu.setdefault(way, {})[step] = {k: round(v, 2) for k, v in med.items()}
    loads = [r["load"] for r in rows]
    settings["load"] = {"min": min(loads), "median": statistics.median(loads), "max": max(loads)}
    return {"settings": settings, "rates": rates, "delays": delays, "cpu": cpu, "rows": rows}


def verdicts(summary: dict[str, Any]) -> list[tuple[str, float, str, bool]]:
    """(what, figure, target, met) for every target."""
    rates = summary["rates"]
    out = [(f"cairn/plain {step}", rates[step]["cairn/plain"], f">= {RATIO}", rates[step]["cairn/plain"] >= RATIO)
           for step in RATIO_STEPS]  # fmt: skip
    for step in RATE_STEPS:
        v = rates[step]["cairn"]["median"]
        out.append((f"cairn {step} MB/s", v, f">= {CAIRN_MBS:.0f}", v >= CAIRN_MBS))
    return out


def report(summary: dict[str, Any]) -> None:
    runs = summary["settings"]["runs"]
    print(f"{'step':12} {'unit':7} {'way':5}" + "".join(f" {'run' + str(i + 1):>9}" for i in range(runs))
          + f" {'median':>9} {'cairn/plain':>11}")  # fmt: skip
    for step, by_way in summary["rates"].items():
        for way in WAYS:
            r = by_way[way]
            cells = "".join(f" {v:9.1f}" for v in r["runs"])
            ratio = f" {by_way['cairn/plain']:11.3f}" if way == "cairn" else ""
            print(f"{step:12} {by_way['unit']:7} {way:5}{cells} {r['median']:9.1f}{ratio}")
    print(f"\ncairn: client's disconnect -> session's snapshot, seconds less smb_idle ({IDLE} s); every session")
    for step, by_kind in summary["delays"].items():
        if not by_kind["sessions"]:
            print(f"  {step:12} no session (nothing written)")
        for kind in ("ended", "created", "listed") if by_kind["sessions"] else ():
            d = by_kind[kind]
            print(f"  {step:12} {kind:8} {' '.join(f'{v:.2f}' for v in d['runs'])}  median {d['median']:.2f}")
    print("\nCPU seconds by process kind (median over the runs; wall = the step's own seconds; bench = robocopy)")
    for way, by_step in summary["cpu"].items():
        for step, kinds in by_step.items():
            top = sorted(((v, k) for k, v in kinds.items() if k != "wall" and v >= 0.05), reverse=True)
            print(f"  {way:5} {step:12} wall {kinds['wall']:7.2f}: " + ", ".join(f"{k} {v:.2f}" for v, k in top))
    print("\ntargets (ra, rb: reads, the bars of a and b)")
    for what, value, target, met in verdicts(summary):
        print(f"  {what:26} {value:9.3f} {target:6} {'OK' if met else 'MISS'}")
    wire = [line for line in summary["settings"]["smb_global"] if "signing" in line or "encrypt" in line]
    print(f"\nboth smbd: {'; '.join(wire)}")
    load = summary["settings"]["load"]
    print(f"\n1-minute load at the steps' starts: min {load['min']:.2f}, median {load['median']:.2f}, "
          f"max {load['max']:.2f} ({os.cpu_count()} CPUs)")  # fmt: skip


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="repetitions of every way (default 3)")
    ap.add_argument("--small", type=int, default=5000, help="small files in step a (default 5000)")
    ap.add_argument("--large-mib", type=int, default=1024, help="MiB of the large file in step b (default 1024)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (data, logs, configs)")
    ap.add_argument("--work", type=Path, default=Path("/var/tmp"), help="where the work directory goes")
    return ap.parse_args()


def main() -> None:
    args = parse()
    if os.geteuid() != 0:
        raise SystemExit("run as root: smbd needs it, and so does dropping the page cache")
    signal.signal(signal.SIGTERM, _terminated)
    OUT.mkdir(parents=True, exist_ok=True)
    bench = Bench(Path(tempfile.mkdtemp(prefix="cairn-smb-bench-", dir=args.work)), args.runs)
    try:
        prepare(bench)
        conf = start_serve(bench)
        start_plain(bench, conf)
        smb_global = sections(conf.read_text())[0][1:]
        rows = run_all(bench, args.small, args.large_mib)
        confirm(bench, rows)
        tracebacks = (bench.work / "serve.log").read_text(errors="replace").count("Traceback")
    finally:
        stop(bench, args.keep)
    settings = {"small": args.small, "large_mib": args.large_mib, "runs": args.runs, "serve_tracebacks": tracebacks,
                "smb_global": smb_global}  # fmt: skip
    summary = summarise(rows, settings)
    report(summary)
    print(f"\ncairn serve's log: {tracebacks} tracebacks" + (f"; work directory {bench.work}" if args.keep else ""))
    (OUT / "smb.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
