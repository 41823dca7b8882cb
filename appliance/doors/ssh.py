"""rsync over SSH: a registered key runs `rsync --server` in a sandbox rooted at its source, as a session.

sshd asks the gate for the keys of a fingerprint (each line forces the
relay with the key's id); the relay hands over the SSH session's
descriptors and this module runs rsync on them as root inside the sandbox,
records the session, and answers with rsync's exit status.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from engine.errors import CairnError, NotFound
from engine.private import create_file
from engine.sessions import STOPPED

from . import command, sandbox
from .keys import SourceKeys
from .sessions import IDLE_TIMEOUT, BackupSessions, Stats, outcome, read_rsync_log

log = logging.getLogger(__name__)
USER = "cairn"  # the one SSH login; the key says which source
GRACE = 10.0  # seconds rsync may outlive its relay before it is stopped


class SshDoor:
    """Thread-safe: each call runs on its own gate thread; `running` is guarded by its lock."""

    def __init__(self, keys: SourceKeys, backups: BackupSessions, mount: Path, logs: Path, hint: str, relay: str):
        self.keys = keys
        self.backups = backups
        self.mount = mount  # the FUSE mount: <mount>/<source>/current
        self.logs = logs  # private directory for the sessions' rsync logs
        self.hint = hint  # how a backup is sent, for refusals
        self.relay = relay  # the forced command's path
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.running: set[subprocess.Popen[bytes]] = set()

    def authorized_keys(self, user: str, fingerprint: str) -> list[str]:
        key = self.keys.by_fingerprint(fingerprint) if user == USER else None
        if key is None:
            return []
        return [f'restrict,command="{self.relay} rsync {key.id}" {key.key} {key.source}']

    def run(self, request: dict[str, Any], fds: list[int], closed: threading.Event) -> dict[str, Any]:
        """Run the session's rsync on the relay's descriptors (closed here); its exit status and message."""
        try:
            return self._run(request, fds, closed)
        finally:
            for fd in fds:
                os.close(fd)

    def _run(self, request: dict[str, Any], fds: list[int], closed: threading.Event) -> dict[str, Any]:
        try:
            key = self.keys.get(int(request.get("key", 0)))
        except (NotFound, ValueError):
            return {"exit": 1, "message": "this key is no longer registered with the appliance"}
        try:
            cmd = command.parse(request.get("command"), self.hint)
        except CairnError as e:
            return {"exit": 1, "message": str(e)}
        folder = self.mount / key.source / ("current" if not cmd.sending else "")
        if not os.path.ismount(self.mount) or not folder.is_dir():
            return {"exit": 1, "message": f"source {key.source!r} is not being served; try again later"}
        client = str(request.get("client", "?"))
        if cmd.sending:  # a restore: read-only, no session
            return self._rsync(folder, cmd, fds, closed, None)
        try:
            session = self.backups.begin(key.source, "ssh", client, key.name)
        except CairnError as e:
            return {"exit": 1, "message": f"no backup now: {e}"}
        return self._rsync(folder, cmd, fds, closed, session.id)

    def _rsync(self, folder: Path, cmd: command.RsyncCommand, fds: list[int], closed: threading.Event,
               session_id: int | None) -> dict[str, Any]:  # fmt: skip
        name = f"session-{session_id}" if session_id is not None else f"read-{threading.get_ident()}"
        log_file = self.logs / f"{name}.log"
        log_file.unlink(missing_ok=True)
        create_file(log_file)  # 0600: it names the client's files
        argv = sandbox.argv(folder, writable=session_id is not None, log_file=log_file)
        argv += cmd.argv(log_file=sandbox.LOG, timeout=IDLE_TIMEOUT)
        reason: str | None
        try:
            proc = subprocess.Popen(argv, stdin=fds[0], stdout=fds[1], stderr=fds[2], close_fds=True)
        except OSError as e:
            reason = f"cannot start rsync: {e.strerror}"
            status = 1
        else:
            for fd in fds:  # rsync holds them now; the channel closes when it exits
                os.close(fd)
            fds.clear()
            status, reason = self._wait(proc, closed)
        stats = read_rsync_log(log_file.read_text(errors="replace"))
        log_file.unlink(missing_ok=True)
        if session_id is not None:
            self.backups.end(session_id, reason, stats if stats.bytes_received is not None else Stats())
        return {"exit": status, "message": reason if status else None}

    def _wait(self, proc: subprocess.Popen[bytes], closed: threading.Event) -> tuple[int, str | None]:
        with self._lock:
            self.running.add(proc)
        try:
            while True:
                try:
                    status = proc.wait(timeout=GRACE if closed.is_set() else 1.0)
                    break
                except subprocess.TimeoutExpired:
                    if closed.is_set() and proc.poll() is None:  # the client went and rsync did not notice
                        proc.terminate()
        finally:
            with self._lock:
                self.running.discard(proc)
        if self._stopping.is_set() or not os.path.ismount(self.mount):
            return (status if status > 0 else 255), STOPPED if status else None
        if status < 0:
            return 255, f"rsync was stopped (signal {-status})"
        reason = outcome(status)
        if reason is not None and closed.is_set():
            reason = f"the client disconnected: {reason}"
        return status, reason

    def stop(self) -> None:
        """Stop the running sessions' rsync (the appliance is stopping); they end as failed."""
        self._stopping.set()
        with self._lock:
            procs = list(self.running)
        for proc in procs:
            proc.terminate()
