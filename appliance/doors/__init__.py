"""The front doors: rsync over SSH, the rsync daemon and Samba, started, configured and supervised by `cairn serve`.

All write through the FUSE mount, so they start with it. Their files:
`<data>/doors/` (0700: sshd's config and host keys, rsyncd's config and
passwords, the sessions' rsync logs, Samba's `smb/`) and a run directory under /run/cairn
(0755, root's: the helper sshd and rsyncd run, and the gate's socket; sshd
wants every directory above its AuthorizedKeysCommand root-owned and
closed to others, which a checkout or the data directory need not be).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.private import make_dirs
from vfs.writers import Writers

from . import smb as samba
from . import sshd
from .gate import Gate
from .rsyncd import Modules, RsyncdSessions
from .smbsessions import SmbSessions
from .ssh import USER, SshDoor

log = logging.getLogger(__name__)
RUN = Path("/run/cairn")
RELAY_PYTHON = "/usr/bin/python3"  # the system's: root's, and what sshd checks is root's (not a checkout's venv)
REFRESH = 2.0  # seconds between looks at the catalog for the rsync daemon's modules and Samba's shares
STARTUP = 10.0  # seconds a server may take to listen
PORT_HINTS = {
    "smbd": " (the machine's own Samba? `systemctl disable --now smbd`; or --smb on another port)",
    "sshd": " (--ssh on another port)",
    "rsyncd": " (the machine's own rsync daemon? or --rsyncd on another port)",
}


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Child:
    """A server process kept running: restarted (after a pause) when it dies while the doors are open."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None):
        self.name, self.argv, self.env = name, argv, env
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"cairn-{name}", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True, env=self.env,
                                     preexec_fn=_die_with_parent)  # fmt: skip
        threading.Thread(target=self._log, args=(self.proc,), name=f"cairn-{self.name}-log", daemon=True).start()

    def _log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("%s: %s", self.name, line.decode(errors="replace").rstrip())

    def _keep(self) -> None:
        while not self._stopping.is_set():
            assert self.proc is not None
            status = self.proc.wait()
            if self._stopping.is_set():
                return
            log.warning("%s exited with status %d; starting it again in 2 s", self.name, status)
            if self._stopping.wait(2.0):
                return
            self._spawn()

    def hangup(self) -> None:
        """SIGHUP: read the config again."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        self._stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when `cairn serve` dies, even by SIGKILL (its ports free for the next)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _listening(port: int) -> bool:
    """Whether some socket listens on TCP `port` (read from /proc: a test connection would be logged as a client)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                return True
    return False


def run_dir(data_dir: Path) -> Path:
    """This data directory's run directory: several appliances (the tests) may run on one machine."""
    return RUN / hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


class Doors:
    """Owns the front doors' servers and the gate; built and started by `cairn serve`."""

    def __init__(self, services: Any, mount: Path, data_dir: Path, ssh: Listen | None, rsyncd: Listen | None,
                 smb: Listen | None = None, writers: Writers | None = None):  # fmt: skip
        self.mount, self.ssh_listen, self.rsyncd_listen, self.smb_listen = mount, ssh, rsyncd, smb
        self.folder = data_dir / "doors"
        self.run = run_dir(data_dir)
        self.relay_file = self.run / "cairn-door"
        # Run through the interpreter, not exec'ed: /run may be mounted noexec (Debian's initramfs does that).
        self.relay = f"{RELAY_PYTHON} -I {self.relay_file}"
        self.ssh = SshDoor(services.keys, services.backups, mount, self.folder / "logs", self.ssh_hint(), self.relay)
        self.modules = Modules(services.deployment, mount, self.folder, self.relay)
        self.transfers = RsyncdSessions(services.backups, self.modules.logfile, mount)
        self.writers = writers or Writers()
        self.shares = samba.Shares(services.deployment, services.accounts, mount, self.folder / "smb", self.relay,
                                 smb.host if smb else "", smb.port if smb else 0)  # fmt: skip
        self.visits = SmbSessions(services.backups, self.writers, self._source_id, self._smb_idle, self.shares.account)
        self.services = services
        self.smbd: Child | None = None
        self.rpcd: Child | None = None
        self.children: list[Child] = []
        self.gate: Gate | None = None
        self.host_keys: list[str] = []
        self._stopping = threading.Event()

    def ssh_hint(self) -> str:
        port = self.ssh_listen.port if self.ssh_listen else 22
        return f"rsync -aHAXS --numeric-ids -e 'ssh -p {port}' / {USER}@APPLIANCE:"

    # -- the gate's handlers ---------------------------------------------------------------

    def keys(self, user: str, fingerprint: str) -> list[str]:
        return self.ssh.authorized_keys(user, fingerprint)

    def rsync(self, request: dict[str, Any], fds: list[int], closed: threading.Event) -> dict[str, Any]:
        return self.ssh.run(request, fds, closed)

    def xfer(self, stage: str, env: dict[str, str]) -> dict[str, Any]:
        return self.transfers.xfer(stage, env)

    def smb(self, request: dict[str, Any]) -> dict[str, Any]:
        args = (str(request.get("share")), str(request.get("user")), str(request.get("client")))
        pid = request.get("pid")
        if not isinstance(pid, int) or pid <= 1:
            raise ValueError("an SMB hook names its server process")
        if request.get("stage") == "connect":
            return self.visits.connect(*args, pid)
        return self.visits.disconnect(*args, pid)

    def _source_id(self, name: str) -> int:
        return int(self.services.deployment.source(name).id)

    def _smb_idle(self, source: str) -> float:
        group = self.services.accounts.source_access().get(source, (None, None))[0]
        return float(self.services.backups.config.value("smb_idle", source, group))

    # -- lifetime --------------------------------------------------------------------------

    def start(self) -> None:
        make_dirs(self.folder / "logs")
        self._prepare_run_dir()
        ssh_uid = sshd.ensure_user() if self.ssh_listen else None
        self.gate = Gate(self.run / "door.sock", self, ssh_uid)
        self.gate.start()
        if self.ssh_listen is not None:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
            keys = sshd.host_keys(self.folder)
            conf = sshd.write_config(self.folder, self.ssh_listen.host, self.ssh_listen.port, self.relay, keys)
            self.host_keys = sshd.fingerprints(keys)
            self._child("sshd", sshd.command(conf), self.ssh_listen)
        if self.rsyncd_listen is not None:
            self.modules.refresh()
            self._child("rsyncd", ["/usr/bin/rsync", "--daemon", "--no-detach", f"--config={self.modules.conf}",
                                   f"--address={self.rsyncd_listen.host}", f"--port={self.rsyncd_listen.port}"],
                        self.rsyncd_listen)  # fmt: skip
        if self.smb_listen is not None:
            self.shares.prepare()
            self.shares.refresh()
            env = samba.environment(self.shares.folder)
            self.rpcd = Child("samba-dcerpcd", samba.rpc_command(self.shares.conf), env)
            self.rpcd.start()
            self.children.append(self.rpcd)
            deadline = time.monotonic() + STARTUP
            while not self.shares.rpc_ready():
                if time.monotonic() > deadline:
                    raise sshd.DoorError("samba-dcerpcd did not start (see the log above)")
                time.sleep(0.05)
            self.smbd = self._child("smbd", samba.command(self.shares.conf), self.smb_listen, env)
            self.visits.start()
        if self.rsyncd_listen is not None or self.smb_listen is not None:
            threading.Thread(target=self._refresh, name="cairn-door-configs", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        for child in self.children:
            child.stop()
        self.ssh.stop()
        self.transfers.abandon()
        if self.smb_listen is not None:
            self.visits.stop()
        if self.gate is not None:
            self.gate.stop()

    def _child(self, name: str, argv: list[str], listen: Listen, env: dict[str, str] | None = None) -> Child:
        if _listening(listen.port):
            hint = PORT_HINTS.get(name, "")
            raise sshd.DoorError(f"cannot start {name}: port {listen.port} is in use{hint}")
        child = Child(name, argv, env)
        child.start()
        self.children.append(child)
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            if _listening(listen.port):
                log.info("%s listening on %s", name, listen)
                return child
            if child.proc is not None and child.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise sshd.DoorError(f"{name} did not start listening on {listen} (see the log above)")

    def _prepare_run_dir(self) -> None:
        for d in (RUN, self.run):
            d.mkdir(mode=0o755, exist_ok=True)
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)  # sshd checks every directory above its key command
        script = (Path(__file__).parent / "client.py").read_text()
        tmp = self.run / ".cairn-door.tmp"
        tmp.write_text("#!/usr/bin/python3 -I\n" + script)
        os.chmod(tmp, 0o755)
        os.replace(tmp, self.relay_file)

    def _refresh(self) -> None:
        while not self._stopping.wait(REFRESH):
            try:
                if self.rsyncd_listen is not None and self.modules.refresh():
                    log.info("rsync daemon: modules rewritten from the catalog")
            except Exception:
                log.exception("cannot rewrite the rsync daemon's modules; trying again")
            try:
                if self.smbd is not None and self.shares.refresh():
                    log.info("Samba: shares and accounts rewritten from the catalog")
                    self.visits.revoke(self.shares.readers)
                    self.smbd.hangup()
                    if self.rpcd is not None:
                        self.rpcd.hangup()
            except Exception:
                log.exception("cannot rewrite Samba's shares; trying again")
