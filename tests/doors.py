"""An appliance with its front doors for tests: `cairn serve` with the mount, sshd and the rsync daemon on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .served import Served, served
from .servers import free_port
from .test_backup_restore import cairn

PASSWORD = "a-long-rsync-password"


@dataclass
class Appliance:
    data: Path
    mnt: Path
    ssh_port: int
    rsyncd_port: int
    keys: dict[str, Path]  # source -> private key file
    served: Served | None = None

    def ssh(self, source: str) -> str:
        """The `-e` of rsync for a client of `source`."""
        return (f"ssh -p {self.ssh_port} -i {self.keys[source]} -o StrictHostKeyChecking=no "
                "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes")  # fmt: skip

    def rsync_ssh(self, source: str, src: str, dest: str = "cairn@127.0.0.1:", *opts: str,
                  **kw: Any) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(["rsync", "-aHAXS", "--numeric-ids", *opts, "-e", self.ssh(source), src, dest],
                              capture_output=True, text=True, timeout=300, **kw)  # fmt: skip

    def daemon_url(self, source: str, module: str | None = None) -> str:
        return f"rsync://{source}@127.0.0.1:{self.rsyncd_port}/{module or source}/"

    def rsync_daemon(self, source: str, src: str, dest: str, *opts: str,
                     password: str = PASSWORD) -> subprocess.CompletedProcess[str]:  # fmt: skip
        env = {**os.environ, "RSYNC_PASSWORD": password}
        return subprocess.run(["rsync", "-aHAXS", "--numeric-ids", *opts, src, dest],
                              capture_output=True, text=True, timeout=300, env=env)  # fmt: skip

    def sessions(self, source: str | None = None) -> list[dict[str, Any]]:
        args = ["session", "list", "--json"] + (["--source", source] if source else [])
        return list(json.loads(cairn(self.data, *args).stdout))

    def snapshots(self, source: str) -> list[dict[str, Any]]:
        return list(json.loads(cairn(self.data, "snapshot", "list", source, "--json").stdout))

    def ended(self, source: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        """The source's sessions once `count` of them have ended and their snapshots (if any) are noted."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sessions(source)
            settled = [s for s in rows if s["state"] == "failed" or (s["state"] == "done" and s["snapshot"])]
            if len(settled) >= count:
                return rows
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)


def prepare(tmp: Path, sources: tuple[str, ...]) -> Appliance:
    data = tmp / "data"
    cairn(data, "init")
    keys = {}
    for source in sources:
        cairn(data, "source", "add", source)
        key = tmp / f"key-{source}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"client-of-{source}", "-f", str(key)],
                       check=True)  # fmt: skip
        cairn(data, "source", "key", "add", source, f"{key}.pub")
        subprocess.run([*_cli(data), "source", "secret", source, "--file", "-"], input=PASSWORD, text=True,
                       check=True, capture_output=True)  # fmt: skip
        keys[source] = key
    return Appliance(data, tmp / "mnt", free_port(), free_port(), keys)


@contextmanager
def serving(app: Appliance, log: Path) -> Iterator[Appliance]:
    doors = ["--mount", str(app.mnt), "--ssh", f"127.0.0.1:{app.ssh_port}", "--rsyncd", f"127.0.0.1:{app.rsyncd_port}"]
    with served(app.data, log, *doors, ready="mounted at") as s:
        app.served = s
        yield app


def _cli(data: Path) -> list[str]:
    from .test_backup_restore import CAIRN

    return [*CAIRN, "--data", str(data)]
