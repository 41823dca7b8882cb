"""SMB connections as backup sessions.

Samba runs one process per client connection and the gate's helper at each
tree connect and disconnect (smb.py). A visit is one client (address and
account) on one share: its processes are watched in the mount
(vfs/writers.py), and the first change one of them makes to the source
begins a session. Once the visit's last process has gone (disconnected, or
died) and `smb_idle` seconds have passed with no new connection, the
session ends well and takes its snapshot; a visit that changed nothing
(browsing, restores, Previous Versions) leaves no session. A change is
anything the mount notes (writers.py), times set to what they were
included: robocopy stamps every folder's times on every run, so an
unchanged run is a session, as an unchanged rsync run is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.errors import CairnError
from engine.leases import pid_alive
from engine.sessions import STOPPED
from vfs.writers import Writers

from .sessions import BackupSessions, Stats

log = logging.getLogger(__name__)
POLL = 1.0  # seconds between looks at the watched processes
REVOKED = "the account was removed or lost its access to {source} during the session"
BROKEN = ("the SMB connection from {client} ended without a disconnect (its server process died); "
          "files may be missing: run the backup again")  # fmt: skip


@dataclass
class Visit:
    source: str
    source_id: int
    client: str
    principal: str
    pids: set[int] = field(default_factory=set)
    session: int | None = None
    refused: bool = False  # its session could not begin (maintenance mode): said once in the log
    broken: bool = False  # its last process ended without a disconnect (killed, crashed)
    revoked: bool = False  # its account may no longer use the share: its connections were ended
    left: float = 0.0  # when its last process went
    bytes: int = 0
    entries: int = 0


class SmbSessions:
    """Thread-safe: the gate's threads connect and disconnect, the poller credits and ends."""

    def __init__(self, backups: BackupSessions, writers: Writers, source_id: Callable[[str], int],
                 idle: Callable[[str], float], account: Callable[[str], str]):  # fmt: skip
        self.backups, self.writers = backups, writers
        self.source_id, self.idle, self.account = source_id, idle, account
        self._lock = threading.Lock()
        self.visits: dict[tuple[str, str, str], Visit] = {}  # (source, client, principal) -> its visit
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="cairn-smb-sessions", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def connect(self, source: str, user: str, client: str, pid: int) -> dict[str, object]:
        try:
            sid = self.source_id(source)
            key = (source, client, self.account(user))
        except CairnError as e:
            return {"ok": False, "message": str(e)}
        with self._lock:
            visit = self.visits.get(key)
            if visit is None:
                visit = self.visits[key] = Visit(source, sid, client, key[2])
            visit.pids.add(pid)
            self.writers.watch(pid)
        log.debug("SMB: %s from %s connected to %s (process %d)", user, client, source, pid)
        return {"ok": True}

    def disconnect(self, source: str, user: str, client: str, pid: int) -> dict[str, object]:
        try:
            key = (source, client, self.account(user))
        except CairnError:
            return {"ok": True}
        with self._lock:
            visit = self.visits.get(key)
            if visit is not None and pid in visit.pids:
                self._credit()
                self._leave(visit, pid)
        return {"ok": True}

    def revoke(self, readers: dict[str, set[str]]) -> None:
        """End the connections of accounts that may no longer use a share (Samba checks only at connect)."""
        with self._lock:
            for visit in self.visits.values():
                if visit.principal in readers.get(visit.source, set()) or not visit.pids:
                    continue
                visit.revoked = True
                log.warning("SMB: %s may no longer use %s: ending its connections", visit.principal, visit.source)
                for pid in visit.pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)

    def stop(self) -> None:
        """The appliance is stopping: open sessions end as failed (their snapshot could not be taken)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            ended = [v.session for v in self.visits.values() if v.session is not None]
            self.visits.clear()
        for session_id in ended:
            self.backups.end(session_id, STOPPED)

    def _poll(self) -> None:
        while not self._stopping.wait(POLL):
            try:
                self.tick(time.monotonic())
            except Exception:
                log.exception("SMB sessions: one look failed; looking again")

    def tick(self, now: float) -> None:
        """Credit what the watched processes wrote, notice the dead ones, end the visits idle long enough."""
        with self._lock:
            self._credit()
            for visit in self.visits.values():
                for pid in [p for p in visit.pids if not pid_alive(p)]:
                    self._leave(visit, pid, broken=True)
            done = [k for k, v in self.visits.items() if not v.pids and now - v.left >= self.idle(v.source)]
            ended = [self.visits.pop(k) for k in done]
        for visit in ended:
            if visit.session is not None:
                reason = REVOKED.format(source=visit.source) if visit.revoked else None
                reason = reason or (BROKEN.format(client=visit.client) if visit.broken else None)
                self.backups.end(visit.session, reason, Stats(visit.bytes, visit.entries))

    def _credit(self) -> None:
        """With the lock held: what each watched process wrote goes to its visit of that source."""
        by_pid: dict[int, list[Visit]] = {}
        for visit in self.visits.values():
            for pid in visit.pids:
                by_pid.setdefault(pid, []).append(visit)
        for pid, visits in by_pid.items():
            for sid, written in self.writers.take(pid).items():
                for visit in visits:
                    if visit.source_id == sid:
                        self._begin(visit)
                        visit.bytes += written.bytes
                        visit.entries += written.entries

    def _begin(self, visit: Visit) -> None:
        if visit.session is not None or visit.refused:
            return
        try:
            visit.session = self.backups.begin(visit.source, "smb", visit.client, visit.principal).id
        except CairnError as e:
            visit.refused = True
            log.warning("SMB: %s wrote into %s but no session could begin: %s", visit.client, visit.source, e)

    def _leave(self, visit: Visit, pid: int, broken: bool = False) -> None:
        visit.pids.discard(pid)
        visit.broken = broken
        if not any(pid in v.pids for v in self.visits.values()):
            self.writers.forget(pid)
        if not visit.pids:
            visit.left = time.monotonic()
