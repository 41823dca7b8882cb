"""The SSH front door's server: Debian's OpenSSH sshd, with a config, host keys and a port of the appliance's own.

Nothing of the machine's own sshd is read or touched: the config and host
keys live in the data directory (`doors/`), keys come from the catalog
through the gate, the only login is the `cairn` user, and every key is
forced to the relay: no shell, no forwarding, no sftp, no passwords.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from engine.errors import CairnError
from engine.private import replace_file

from .ssh import USER

SSHD = "/usr/sbin/sshd"
HOST_KEYS = ("ed25519", "rsa")


class DoorError(CairnError):
    """A front door cannot start: what is missing, in words."""


def ensure_user() -> int:
    """The `cairn` login's uid, the account made on first use (no password, no home: it only runs the relay)."""
    try:
        return pwd.getpwnam(USER).pw_uid
    except KeyError:
        pass
    done = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/", "--shell", "/bin/sh",
                           "--password", "*", "--comment", "Cairn backups over SSH", USER],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0 and "already exists" not in done.stderr:
        raise DoorError(f"cannot make the {USER!r} account for SSH logins: {done.stderr.strip()}")
    return pwd.getpwnam(USER).pw_uid


def host_keys(folder: Path) -> list[Path]:
    """This appliance's host keys, made on first start (never shipped: each machine has its own)."""
    keys = []
    for kind in HOST_KEYS:
        path = folder / f"ssh_host_{kind}_key"
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"cairn@{kind}", "-f", str(path)],
                           check=True, capture_output=True)  # fmt: skip
            os.chmod(f"{path}.pub", 0o600)  # public, but every file in the data directory is private
        keys.append(path)
    return keys


def fingerprints(keys: list[Path]) -> list[str]:
    """The host keys' fingerprints as `ssh-keygen -l` prints them, for clients to check on first connect."""
    out = []
    for key in keys:
        done = subprocess.run(["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True, check=True)
        out.append(done.stdout.strip())
    return out


def config(host: str, port: int, keys: list[Path], relay: str) -> str:
    lines = [
        "# Written by Cairn; changes here are overwritten.",
        f"ListenAddress {host}:{port}" if ":" not in host else f"ListenAddress [{host}]:{port}",
        *[f"HostKey {k}" for k in keys],
        "PidFile none",  # `cairn serve` holds the process
        "UsePAM no",
        f"AllowUsers {USER}",
        "AuthorizedKeysFile none",
        f"AuthorizedKeysCommand {relay} keys %u %f",
        f"AuthorizedKeysCommandUser {USER}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "PermitRootLogin no",
        "DisableForwarding yes",
        "PermitTTY no",
        "PermitTunnel no",
        "PermitUserEnvironment no",
        "PermitUserRC no",
        "StrictModes yes",
        "LoginGraceTime 30",
        "MaxAuthTries 6",
        "MaxStartups 20:30:100",
        "ClientAliveInterval 30",
        "ClientAliveCountMax 4",  # a vanished client is let go after two minutes
        "PrintMotd no",
        "PrintLastLog no",
        "LogLevel INFO",
        "",
    ]
    return "\n".join(lines)


def write_config(folder: Path, host: str, port: int, relay: str, keys: list[Path]) -> Path:
    path = folder / "sshd_config"
    replace_file(path, config(host, port, keys, relay).encode())
    done = subprocess.run([SSHD, "-t", "-f", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise DoorError(f"sshd refuses its config: {done.stderr.strip()}")
    return path


def command(config_path: Path) -> list[str]:
    return [SSHD, "-D", "-e", "-f", str(config_path)]
