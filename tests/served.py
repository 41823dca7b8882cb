"""`cairn serve` as a child process for tests: started on a free loopback port, stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .servers import free_port
from .test_backup_restore import CAIRN


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT
    password: str  # the first start's one-time password of `admin`
    log: Path


@contextmanager
def served(data: Path, log: Path, *extra: str, ready: str = "serving on", tls: bool = False) -> Iterator[Served]:
    """Run `cairn serve` until the block ends; it must then stop cleanly (exit 0, no traceback).

    Plain HTTP on loopback unless `tls` (then the certificate is the one made in DATA/tls/).
    """
    port = free_port()
    plain = [] if tls else ["--no-tls"]
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CAIRN, "--data", str(data), "serve", "--listen", f"127.0.0.1:{port}", *plain, *extra],
                                stdout=out, stderr=out)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while ready not in log.read_text() or "serving on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        found = re.search(r"one-time password (\S+)", log.read_text())
        yield Served(f"{'https' if tls else 'http'}://127.0.0.1:{port}", found.group(1) if found else "", log)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()


def remote_cli(tmp: Path, server: Served) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`cairn --remote office …` against `server`, signed in as admin (its config in tmp/config)."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config")}

    def remote(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CAIRN, *args], capture_output=True, text=True, env=env, timeout=300)

    (tmp / "pw").write_text(server.password)
    added = remote("remote", "add", "office", server.url, "--user", "admin", "--password-file", str(tmp / "pw"))
    assert added.returncode == 0, added.stderr
    return lambda *args: remote("--remote", "office", *args)
