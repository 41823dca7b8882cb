"""Front doors benchmark: stock rsync over SSH and through the rsync daemon into a source, beside the mount.

Four ways in, side by side in one run, each repeated --runs times with `rsync -aHAXS --numeric-ids`:
  ssh     -e ssh ... cairn@127.0.0.1:              the SSH door, into the source's current/
  daemon  rsync://S@127.0.0.1:PORT/S/              the rsync daemon door
  mount   MOUNT/S/current/                         local rsync straight into the FUSE mount
  sshd    -e ssh ... root@127.0.0.1:DIR/           a second, plain sshd into a plain directory:
                                                   what SSH itself costs on this machine
Steps: a  20,000 small files (0-16 KiB, random bytes, ~200 directories)
       b  2 GiB of large files (4 x 512 MiB, random bytes)
       c  a and b again in one rsync, nothing changed
Targets: ssh/mount and daemon/mount >= 0.9 at every step; b >= 100 MB/s through each door; a door's
session is a snapshot within 2 s of the client's exit.
Every transfer gets a fresh source (ssh-1, daemon-1, mount-1, ...) and freshly made random bytes in
the same layout, so no way in is helped by chunks an earlier one stored; the page cache is dropped
before each timed rsync and the order of the ways turns by one each run. CPU seconds per kind of
process (/proc/PID/stat, sampled) say where each transfer's time went; `others` is load from
outside the benchmark, which moves every figure on a shared machine.
Prints a table (and, with --json, the same as JSON at the end); also writes bench/out/doors.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
CAIRN = [str(Path(sys.executable).with_name("cairn"))]
RSYNC = ["rsync", "-aHAXS", "--numeric-ids"]
SSHD = "/usr/sbin/sshd"
SSH = "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
WAYS = ("ssh", "daemon", "mount", "sshd")
DOORS = ("ssh", "daemon")
UNITS = {"a": "files/s", "b": "MB/s", "c": "files/s"}
RATIO, DOOR_MBS, DELAY = 0.9, 100.0, 2.0  # the targets
PASSWORD = "doors-bench-rsync-password"
SAMPLE = 0.25  # seconds between looks at /proc: a process that ends between two loses at most this much
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Bench:
    work: Path
    runs: int
    data: Path = field(init=False)
    mnt: Path = field(init=False)
    ports: dict[str, int] = field(default_factory=dict)  # web, ssh, rsyncd, sshd
    keys: dict[str, Path] = field(default_factory=dict)  # ssh-N source (and "sshd") -> private key
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _catalog: Any = None

    def __post_init__(self) -> None:
        self.data, self.mnt = self.work / "data", self.work / "mnt"

    def catalog(self) -> Any:
        """The appliance's catalog, read beside it (opened once, without migrating)."""
        if self._catalog is None:
            from engine.catalog.db import open_catalog
            from engine.deployment import default_db_url

            self._catalog = open_catalog(default_db_url(self.data), migrate=False)
        return self._catalog


@dataclass(frozen=True)
class Corpus:
    root: Path
    small: int  # files in small/
    large: int  # files in large/
    large_bytes: int

    def amount(self, step: str) -> float:
        return {"a": self.small, "b": self.large_bytes / 1e6, "c": self.small + self.large}[step]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cairn(bench: Bench, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([*CAIRN, "--data", str(bench.data), *args], input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cairn {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


def make_corpus(root: Path, n_small: int, large_mib: int) -> Corpus:
    """Fresh random bytes, in the same layout every time (sizes from one seed): nothing in it dedups."""
    rnd = random.Random(7)
    dirs = max(1, round(n_small / 100))
    for d in range(dirs):
        (root / "small" / f"d{d:03}").mkdir(parents=True)
    for i in range(n_small):
        (root / "small" / f"d{i % dirs:03}" / f"f{i:05}").write_bytes(os.urandom(rnd.randrange(0, (16 << 10) + 1)))
    (root / "large").mkdir()
    count = 4 if large_mib >= 4 else 1
    size = (large_mib << 20) // count
    for i in range(count):
        with open(root / "large" / f"big{i}", "wb") as f:
            for offset in range(0, size, 1 << 20):
                f.write(os.urandom(min(1 << 20, size - offset)))
    return Corpus(root, n_small, count, count * size)


def prepare(bench: Bench) -> None:
    """The deployment, one source per way in and run (keys for ssh-N, passwords for daemon-N), the ports."""
    cairn(bench, "init")
    for run in range(1, bench.runs + 1):
        for way in ("ssh", "daemon", "mount"):
            cairn(bench, "source", "add", f"{way}-{run}")
        key = bench.keys[f"ssh-{run}"] = keygen(bench.work / f"key-ssh-{run}", f"client-of-ssh-{run}")
        cairn(bench, "source", "key", "add", f"ssh-{run}", f"{key}.pub")
        cairn(bench, "source", "secret", f"daemon-{run}", "--file", "-", stdin=PASSWORD)
    bench.keys["sshd"] = keygen(bench.work / "key-sshd", "client-of-plain-sshd")
    bench.ports = {name: free_port() for name in ("web", "ssh", "rsyncd", "sshd")}


def wait_until(ready: Any, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def start_serve(bench: Bench) -> None:
    p = bench.ports
    log = bench.work / "serve.log"
    with open(log, "wb") as out:
        bench.procs["serve"] = proc = subprocess.Popen(
            [*CAIRN, "--data", str(bench.data), "serve", "--listen", f"127.0.0.1:{p['web']}", "--no-tls", "--mount",
             str(bench.mnt), "--ssh", f"127.0.0.1:{p['ssh']}", "--rsyncd", f"127.0.0.1:{p['rsyncd']}"],
            stdout=out, stderr=out)  # fmt: skip
    wait_until(lambda: "mounted at" in log.read_text(errors="replace"), proc, log, "cairn serve")


def start_plain_sshd(bench: Bench) -> None:
    """Debian's sshd with its own config, host key, port and authorized_keys, all in the work directory."""
    d = bench.work / "sshd"
    d.mkdir(mode=0o700)
    host = keygen(d / "host_key", "plain-sshd")
    shutil.copy(f"{bench.keys['sshd']}.pub", d / "authorized_keys")
    conf = d / "sshd_config"
    conf.write_text("\n".join([
        f"ListenAddress 127.0.0.1:{bench.ports['sshd']}", f"HostKey {host}", f"PidFile {d / 'sshd.pid'}",
        "UsePAM no", f"AuthorizedKeysFile {d / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "AllowUsers root", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "StrictModes no",  # the key file is under /var/tmp (mode 1777), which StrictModes refuses
        "PrintMotd no", "LogLevel ERROR", "",
    ]))  # fmt: skip
    subprocess.run([SSHD, "-t", "-f", str(conf)], check=True)
    log = bench.work / "sshd.log"
    with open(log, "wb") as out:
        bench.procs["sshd"] = proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdout=out, stderr=out)
    wait_until(lambda: listening(bench.ports["sshd"]), proc, log, "the plain sshd")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def stop(bench: Bench) -> None:
    """Stop what the benchmark started, by PID, and leave no mount, run directory or work directory."""
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
    if os.path.ismount(bench.mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(bench.mnt)], capture_output=True)
    from appliance.doors import run_dir

    shutil.rmtree(run_dir(bench.data), ignore_errors=True)
    shutil.rmtree(bench.work, ignore_errors=True)


class CpuSampler:
    """CPU seconds per kind of process from /proc/PID/stat deltas while one transfer runs.

    Kinds: `client <comm>` (the client rsync and its ssh), `cairn serve` (mount, doors, jobs: one
    process), the servers' processes by name (sshd, rsync, bwrap, cairn-door), `bench` (this script),
    `kernel` (kernel threads: writeback among them) and `others` (load from outside the benchmark).
    """

    def __init__(self, serve_pid: int):
        self.serve_pid, self.me = serve_pid, os.getpid()
        self.client = -1
        self.base = {pid: ticks for pid, (_, _, ticks) in _stats().items()}
        self.last: dict[int, tuple[str, int]] = {}
        self.owner: dict[int, str] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(SAMPLE):
            self._sample()

    def _sample(self) -> None:
        stats = _stats()
        for pid, (comm, _, ticks) in stats.items():
            # Whose a process is, is settled when it is first seen: one whose parent exits first is
            # reparented to init (sshd's session process is), and would then look like anyone's.
            owner = self.owner.get(pid) or self.owner.setdefault(pid, self._owner(pid, stats))
            self.last[pid] = (self._kind(pid, owner, comm), ticks)

    def _owner(self, pid: int, stats: dict[int, tuple[str, int, int]]) -> str:
        chain, p = [], pid
        while p in stats and p not in chain:
            chain.append(p)
            p = stats[p][1]
        if pid == 2 or p == 2 or 2 in chain:
            return "kernel"
        if self.client in chain:
            return "client"
        return "mine" if self.me in chain else "others"

    def _kind(self, pid: int, owner: str, comm: str) -> str:
        if owner == "client":
            return f"client {comm}"
        if owner != "mine":
            return owner
        return {self.serve_pid: "cairn serve", self.me: "bench"}.get(pid, comm)

    def stop(self) -> dict[str, float]:
        self._stopping.set()
        self._thread.join()
        self._sample()
        cpu: dict[str, float] = {}
        for pid, (kind, ticks) in self.last.items():
            used = (ticks - self.base.get(pid, 0)) / TICK
            if used > 0:
                cpu[kind] = round(cpu.get(kind, 0.0) + used, 2)
        return cpu


def _stats() -> dict[int, tuple[str, int, int]]:
    """pid -> (comm, ppid, utime + stime in ticks) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        head, _, tail = raw.rpartition(")")
        fields = tail.split()  # from the state (field 3): ppid is field 4, utime and stime 14 and 15
        out[int(name)] = (head.partition("(")[2], int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


def destination(bench: Bench, way: str, run: int, sub: str) -> tuple[list[str], dict[str, str]]:
    """The rsync options and destination of a way in, and its environment."""
    env = dict(os.environ)
    source = f"{way}-{run}"
    if way == "ssh":
        return ["-e", f"{SSH} -p {bench.ports['ssh']} -i {bench.keys[source]}", f"cairn@127.0.0.1:{sub}"], env
    if way == "daemon":
        env["RSYNC_PASSWORD"] = PASSWORD
        return [f"rsync://{source}@127.0.0.1:{bench.ports['rsyncd']}/{source}/{sub}"], env
    if way == "mount":
        return [f"{bench.mnt / source / 'current'}/{sub}"], env
    ssh = f"{SSH} -p {bench.ports['sshd']} -i {bench.keys['sshd']}"
    return ["-e", ssh, f"root@127.0.0.1:{bench.work / 'plain' / str(run)}/{sub}"], env


def transfer(bench: Bench, way: str, run: int, src: Path, sub: str) -> tuple[float, float, dict[str, float]]:
    """One timed rsync from a cold page cache: its seconds, the wall-clock time of its exit, CPU by kind."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    args, env = destination(bench, way, run, sub)
    sampler = CpuSampler(bench.procs["serve"].pid)
    start = time.perf_counter()
    proc = subprocess.Popen([*RSYNC, *args[:-1], f"{src}/", args[-1]], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    sampler.client = proc.pid  # before its first sample: the sampler waits SAMPLE seconds
    _, err = proc.communicate()
    seconds, exited = time.perf_counter() - start, time.time()
    cpu = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{way} run {run}: rsync exited with {proc.returncode}: {err.decode(errors='replace')}")
    return seconds, exited, cpu


def settle(bench: Bench, source: str, after: int, exited: float, timeout: float = 600) -> dict[str, float]:
    """Wait for the source's next session to end in a snapshot; its times after the client's exit.

    `listed` is when the session list first named the snapshot (read from the catalog every 0.05 s:
    the CLI takes a second and a half to start, too coarse for this).
    """
    from engine.sessions import Sessions

    sessions = Sessions(bench.catalog(), "doors-bench")
    deadline = time.monotonic() + timeout
    while True:
        new = [s for s in sessions.recent(source, 5) if s.id > after]
        if new and (new[0].state == "failed" or new[0].snapshot):
            listed = time.time()
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"no snapshot of {source} {timeout:.0f} s after its session")
        time.sleep(0.05)
    session = new[0]
    if session.state != "done" or session.ended is None:
        raise SystemExit(f"session {session.id} of {source} failed: {session.reason}")
    snaps = {s["name"]: s for s in json.loads(cairn(bench, "snapshot", "list", source, "--json"))}
    return {"session": session.id, "ended": round(session.ended - exited, 3),
            "created": round(snaps[session.snapshot]["created"] - exited, 3),
            "listed": round(listed - exited, 3)}  # fmt: skip


def run_way(bench: Bench, way: str, run: int, corpus: Corpus) -> list[dict[str, Any]]:
    """Steps a, b and c of one way in, into its fresh source (or plain directory)."""
    if way == "sshd":
        (bench.work / "plain" / str(run)).mkdir(parents=True)
    rows, last = [], 0
    steps = (("a", corpus.root / "small", "small/"), ("b", corpus.root / "large", "large/"), ("c", corpus.root, ""))
    for step, src, sub in steps:
        load = os.getloadavg()[0]
        seconds, exited, cpu = transfer(bench, way, run, src, sub)
        row: dict[str, Any] = {"way": way, "run": run, "step": step, "seconds": round(seconds, 3),
                               "rate": round(corpus.amount(step) / seconds, 1), "cpu": cpu, "load": load}  # fmt: skip
        if way in DOORS:
            row["delay"] = settle(bench, f"{way}-{run}", last, exited)
            last = row["delay"]["session"]
        print(f"run {run} {way:6} {step}: {row['rate']:9.1f} {UNITS[step]} in {seconds:7.2f} s "
              f"{row.get('delay', '')} cpu {cpu}", file=sys.stderr, flush=True)  # fmt: skip
        rows.append(row)
    if way == "sshd":
        shutil.rmtree(bench.work / "plain" / str(run))
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
                shutil.rmtree(corpus.root)
    return rows


def summarise(rows: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Every run's rate, the medians, the ratios to the mount, the session-to-snapshot delays, CPU by kind."""
    rates: dict[str, dict[str, Any]] = {}
    for step in UNITS:
        rates[step] = {"unit": UNITS[step]}
        for way in WAYS:
            runs = [r["rate"] for r in rows if r["way"] == way and r["step"] == step]
            rates[step][way] = {"runs": runs, "median": statistics.median(runs)}
    ratios = {f"{door}/mount": {step: round(rates[step][door]["median"] / rates[step]["mount"]["median"], 3)
                                for step in UNITS} for door in DOORS}  # fmt: skip
    delays = {}
    for door in DOORS:
        got = [r["delay"] for r in rows if r["way"] == door]
        delays[door] = {k: {"runs": [d[k] for d in got], "median": statistics.median(d[k] for d in got)}
                        for k in ("ended", "created", "listed")}  # fmt: skip
    cpu: dict[str, dict[str, dict[str, float]]] = {}
    for way in WAYS:
        for step in UNITS:
            picked = [r for r in rows if r["way"] == way and r["step"] == step]
            kinds = sorted({k for r in picked for k in r["cpu"]})
            med = {k: statistics.median(r["cpu"].get(k, 0.0) for r in picked) for k in kinds}
            med["wall"] = statistics.median(r["seconds"] for r in picked)
            cpu.setdefault(way, {})[step] = {k: round(v, 2) for k, v in med.items()}
    return {"settings": settings, "rates": rates, "ratios": ratios, "delays": delays, "cpu": cpu, "rows": rows}


def verdicts(summary: dict[str, Any]) -> list[tuple[str, float, str, bool]]:
    """(what, figure, target, met) for every target."""
    out = []
    for name, by_step in summary["ratios"].items():
        out += [(f"{name} {step}", v, f">= {RATIO}", v >= RATIO) for step, v in by_step.items()]
    for door in DOORS:
        v = summary["rates"]["b"][door]["median"]
        out.append((f"{door} b MB/s", v, f">= {DOOR_MBS:.0f}", v >= DOOR_MBS))
        for k in ("created", "listed"):
            d = summary["delays"][door][k]["median"]
            out.append((f"{door} exit->{k} s", d, f"<= {DELAY:.0f}", d <= DELAY))
    return out


def report(summary: dict[str, Any]) -> None:
    runs = summary["settings"]["runs"]
    print(f"{'step':4} {'unit':8} {'way':7}" + "".join(f" {'run' + str(i + 1):>9}" for i in range(runs))
          + f" {'median':>9} {'/mount':>7}")  # fmt: skip
    for step, by_way in summary["rates"].items():
        mount = by_way["mount"]["median"]
        for way in WAYS:
            r = by_way[way]
            cells = "".join(f" {v:9.1f}" for v in r["runs"])
            print(f"{step:4} {by_way['unit']:8} {way:7}{cells} {r['median']:9.1f} {r['median'] / mount:7.3f}")
    print("\nsession -> snapshot, seconds after the client's exit (every session, then the median)")
    for door, by_kind in summary["delays"].items():
        for kind, d in by_kind.items():
            print(f"  {door:7} {kind:10} {' '.join(f'{v:.2f}' for v in d['runs'])}  median {d['median']:.2f}")
    print("\nCPU seconds by process kind (median over the runs; wall = the rsync's own seconds)")
    for way, by_step in summary["cpu"].items():
        for step, kinds in by_step.items():
            top = sorted(((v, k) for k, v in kinds.items() if k != "wall" and v >= 0.05), reverse=True)
            print(f"  {way:7} {step} wall {kinds['wall']:7.2f}: " + ", ".join(f"{k} {v:.2f}" for v, k in top))
    print("\ntargets")
    for what, value, target, met in verdicts(summary):
        print(f"  {what:24} {value:9.3f} {target:8} {'OK' if met else 'MISS'}")


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, help="small files in step a (default 20000; --quick 1000)")
    ap.add_argument("--large-mib", type=int, help="MiB of large files in step b (default 2048; --quick 64)")
    ap.add_argument("--runs", type=int, help="repetitions of every way in (default 3; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a trial")
    ap.add_argument("--work", type=Path, default=Path("/var/tmp"), help="where the temporary directory goes")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON at the end")
    args = ap.parse_args()
    quick = args.quick
    args.small = args.small if args.small is not None else (1000 if quick else 20_000)
    args.large_mib = args.large_mib if args.large_mib is not None else (64 if quick else 2048)
    args.runs = args.runs if args.runs is not None else (2 if quick else 3)
    return args


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so the finally below cleans up


def main() -> None:
    args = parse()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the doors need it, and so does dropping the page cache")
    signal.signal(signal.SIGTERM, _terminated)
    OUT.mkdir(parents=True, exist_ok=True)
    bench = Bench(Path(tempfile.mkdtemp(prefix="cairn-doors-bench-", dir=args.work)), args.runs)
    try:
        prepare(bench)
        start_serve(bench)
        start_plain_sshd(bench)
        rows = run_all(bench, args.small, args.large_mib)
        tracebacks = (bench.work / "serve.log").read_text(errors="replace").count("Traceback")
    finally:
        stop(bench)
    settings = {"small": args.small, "large_mib": args.large_mib, "runs": args.runs, "serve_tracebacks": tracebacks}
    summary = summarise(rows, settings)
    report(summary)
    print(f"\ncairn serve's log: {tracebacks} tracebacks")
    (OUT / "doors.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
