"""Backup sessions as the appliance runs them: begun by a front door, ended in a snapshot or a recorded failure.

A session that ends well submits a snapshot job for its source (the
`snapshot_after_session` setting, on by default); the job notes the
snapshot on the session, or fails it. A failed session mails the source's
`notify_email`, as a failed job does. Thread-safe: the catalog rows are the
state, and each door's thread calls in on its own.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

from engine.deployment import Deployment
from engine.errors import ReadOnly
from engine.sessions import STOPPED, Session, Sessions

from ..accounts import Accounts
from ..config import Config
from ..jobs import JobQueue
from ..notify import Notifier

log = logging.getLogger(__name__)

# rsync's exit codes, in words (rsync(1), EXIT VALUES).
RSYNC_EXIT = {
    1: "a syntax or usage error", 2: "a protocol incompatibility", 3: "errors selecting input/output files",
    5: "an error starting the client-server protocol", 10: "an error in socket I/O", 11: "an error in file I/O",
    12: "an error in the rsync protocol data stream (the connection was cut)", 13: "errors with program diagnostics",
    14: "an error in IPC code", 20: "the transfer was interrupted (SIGUSR1 or SIGINT)",
    22: "an error allocating memory", 23: "a partial transfer: some files were not written",
    24: "a partial transfer: some source files vanished", 25: "the --max-delete limit stopped deletions",
    30: "a timeout in data send/receive", 35: "a timeout waiting for the daemon connection",
}  # fmt: skip


IDLE_TIMEOUT = 900  # seconds without I/O before rsync, behind either door, gives up on a silent client


@dataclass(frozen=True)
class Stats:
    bytes_received: int | None = None
    files_changed: int | None = None


def read_rsync_log(text: str) -> Stats:
    """Bytes received and entries changed, from an rsync log (its itemized lines and closing summary)."""
    received = None
    changed = 0
    for line in text.splitlines():
        message = line.split("] ", 1)[1] if "] " in line else line
        m = re.match(r"sent [\d,.]+ bytes\s+received ([\d,.]+) bytes", message)
        if m:
            received = int(re.sub(r"[,.]", "", m.group(1)))
        elif re.match(r"([<>ch.*][fdLDS]|\*deleting)", message):
            changed += 1
    return Stats(received, changed)


def outcome(status: int, mounted: bool = True) -> str | None:
    """None for rsync's success, else the reason in words (`mounted` False: the mount went away under it)."""
    if status == 0:
        return None
    words = f"rsync exited with code {status}: {RSYNC_EXIT.get(status, 'an error')}"
    return words if mounted else f"{STOPPED} ({words})"


@dataclass(frozen=True)
class BackupSessions:
    deployment: Deployment
    sessions: Sessions
    jobs: JobQueue
    config: Config
    accounts: Accounts
    notifier: Notifier

    def begin(self, source: str, door: str, client: str, principal: str) -> Session:
        """A new running session; ReadOnly while the appliance is in maintenance mode."""
        self.deployment.check_writable()
        session = self.sessions.begin(source, door, client, principal)
        log.info("session %d: %s from %s (%s) into %s", session.id, door, client, principal, source)
        return session

    def end(self, session_id: int, reason: str | None, stats: Stats = Stats()) -> Session:
        """Close a session; a good one queues its snapshot, a failed one mails."""
        session = self.sessions.end(session_id, reason=reason, bytes_received=stats.bytes_received,
                                    files_changed=stats.files_changed)  # fmt: skip
        log.info("session %d ended: %s", session.id, reason or "done")
        if reason is not None:  # mailed on the side: the client is waiting for its exit status
            threading.Thread(target=self._notify_failed, args=(session,), name="cairn-notify", daemon=True).start()
            return session
        group = self.accounts.source_access().get(session.source, (None, None))[0]
        if self.config.value("snapshot_after_session", session.source, group):
            source_id = self.deployment.source(session.source).id
            self.jobs.submit("snapshot", {"source": session.source, "name": None, "session": session.id},
                             source_id=source_id)  # fmt: skip
        return session

    def refusal(self) -> str | None:
        """Why no session may start now, in words, or None."""
        try:
            self.deployment.check_writable()
        except ReadOnly as e:
            return str(e)
        return None

    def _notify_failed(self, session: Session) -> None:
        group = self.accounts.source_access().get(session.source, (None, None))[0]
        stored = self.config.stored()
        to = self.config.value("notify_email", session.source, group, stored)
        if to:
            self.notifier.send(to, f"Cairn: backup session #{session.id} of {session.source} failed",
                               f"The {session.door} session from {session.client} ({session.principal}) "
                               f"failed: {session.reason}\n", stored)  # fmt: skip
