"""An appliance serving its SMB shares for tests: `cairn serve` with the mount and Samba on loopback, and smbclient.

Accounts: alice (operator of group `office`, which holds `laptop`), bob
(member, owner of `desk`, no group), carol (global admin), dave (no role).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .served import Served, served
from .servers import free_port
from .test_backup_restore import CAIRN, cairn

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "carol": "carol-password-333",
             "dave": "dave-password-4444"}  # fmt: skip
IDLE = 1.5  # smb_idle in the tests: seconds after the last disconnect before a session ends


@dataclass
class SmbAppliance:
    data: Path
    mnt: Path
    port: int
    served: Served | None = None

    def smbclient(self, share: str, commands: str, user: str = "alice", password: str | None = None,
                  *opts: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run smbclient's `commands` against `share` (SMB3, signed) as `user`."""
        secret = PASSWORDS.get(user, "") if password is None else password
        argv = ["smbclient", f"//127.0.0.1/{share}", "-p", str(self.port), "-U", f"{user}%{secret}", "-m", "SMB3",
                *opts, "-c", commands]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=cwd)

    def sessions(self, source: str) -> list[dict[str, Any]]:
        return list(json.loads(cairn(self.data, "session", "list", "--json", "--source", source).stdout))

    def snapshots(self, source: str) -> list[dict[str, Any]]:
        return list(json.loads(cairn(self.data, "snapshot", "list", source, "--json").stdout))

    def settled(self, source: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The source's sessions once `count` have ended (and the good ones' snapshots are noted)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sessions(source)
            done = [s for s in rows if s["state"] == "failed" or (s["state"] == "done" and s["snapshot"])]
            if len(done) >= count:
                return rows
            assert time.monotonic() < deadline, rows
            time.sleep(0.3)

    def quiet(self, source: str) -> int:
        """Wait until the source's sessions have ended and its visits are over; how many sessions it has."""
        count = len(self.settled(source, len([s for s in self.sessions(source)])))
        time.sleep(IDLE + 1.2)  # the poller looks each second
        return len(self.settled(source, count))

    def versions(self, source: str, count: int, timeout: float = 30) -> list[str]:
        """The @GMT tokens of the source's links once there are `count` (the appliance makes them within 2 s)."""
        folder = self.data / "doors" / "smb" / "versions" / source
        deadline = time.monotonic() + timeout
        while True:
            tokens = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
            if len(tokens) >= count:
                return tokens
            assert time.monotonic() < deadline, tokens
            time.sleep(0.2)


def prepare(tmp: Path) -> SmbAppliance:
    data = tmp / "data"
    cairn(data, "init")
    for source in ("laptop", "desk"):
        cairn(data, "source", "add", source)
    cairn(data, "group", "add", "office")
    for user, password in PASSWORDS.items():
        args = ["user", "add", user, "--password-file", "/dev/stdin"] + (["--admin"] if user == "carol" else [])
        subprocess.run([*CAIRN, "--data", str(data), *args], input=password, text=True, check=True,
                       capture_output=True)  # fmt: skip
    cairn(data, "group", "member", "office", "alice", "operator")
    cairn(data, "assign", "laptop", "--group", "office")
    cairn(data, "assign", "desk", "--owner", "bob")
    cairn(data, "config", "set", "smb_idle", str(IDLE))
    return SmbAppliance(data, tmp / "mnt", free_port())


@contextmanager
def serving(app: SmbAppliance, log: Path) -> Iterator[SmbAppliance]:
    with served(app.data, log, "--mount", str(app.mnt), "--smb", f"127.0.0.1:{app.port}", ready="mounted at") as s:
        app.served = s
        yield app
