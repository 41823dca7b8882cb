"""Which watched processes changed which source through the mount, and by how much.

A front door whose server writes through the mount (Samba: one process per
client connection) cannot tell on its own whether a connection wrote: it
watches that process here, and the mount notes every change the process
makes to a working tree. Unwatched processes cost one set lookup a change.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Written:
    """What one process changed in one source: bytes written, and entries made, rewritten or removed."""

    bytes: int = 0
    entries: int = 0


class Writers:
    """Thread-safe: the mount notes on its loop, a door takes from its own thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.watched: set[int] = set()  # read without the lock by the mount: a stale answer costs one note
        self._written: dict[int, dict[int, Written]] = {}  # pid -> source id -> what it changed

    def watch(self, pid: int) -> None:
        with self._lock:
            self.watched.add(pid)
            self._written.setdefault(pid, {})

    def forget(self, pid: int) -> dict[int, Written]:
        """Stop watching `pid`; what it changed since the last `take`."""
        with self._lock:
            self.watched.discard(pid)
            return self._written.pop(pid, {})

    def note(self, pid: int, source_id: int, nbytes: int = 0, entries: int = 0) -> None:
        with self._lock:
            by_source = self._written.get(pid)
            if by_source is None:
                return
            w = by_source.get(source_id)
            if w is None:
                w = by_source[source_id] = Written()
            w.bytes += nbytes
            w.entries += entries

    def take(self, pid: int) -> dict[int, Written]:
        """What `pid` changed since the last call, by source id (it stays watched)."""
        with self._lock:
            if pid not in self._written:
                return {}
            taken, self._written[pid] = self._written[pid], {}
            return taken
