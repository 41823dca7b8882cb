"""Blobs in flight: put by an operation whose references marking cannot see yet.

Garbage collection marks from the catalog, but a writer puts blobs before it
references them anywhere (a spool chunks a file long before its release
installs the chunk list; a snapshot writes trees before its row commits). So
writers hold a session from before their first put until what they wrote is
referenced from a working tree in memory or from the catalog, and every put
is numbered. A collection keeps every blob put since the oldest session open
when it began, and every blob put while it runs.

Thread-safe: `_lock` guards everything.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterable, Iterator

from .errors import InUse


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._recent: dict[bytes, int] = {}  # blob id -> number of its last put
        self._sessions: dict[int, int] = {}  # session -> number of the last put before it began
        self._tokens = itertools.count(1)
        self._cutoff: int | None = None  # while a collection runs
        self._prune_at = 1 << 16
        self.forgotten: set[bytes] = set()  # dropped by the running collection

    def put(self, blob_id: bytes) -> None:
        with self._lock:
            self._seq += 1
            self._recent[blob_id] = self._seq

    def begin(self) -> int:
        """A writer starts; pass the token to end() once its blobs are referenced."""
        with self._lock:
            token = next(self._tokens)
            self._sessions[token] = self._seq
            return token

    def end(self, token: int) -> None:
        with self._lock:
            self._sessions.pop(token, None)
            if len(self._recent) > self._prune_at and self._cutoff is None:
                # Puts older than every open session are referenced by now: forget them.
                oldest = min(self._sessions.values(), default=self._seq)
                self._recent = {i: n for i, n in self._recent.items() if n > oldest}
                self._prune_at = max(1 << 16, 2 * len(self._recent))

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        token = self.begin()
        try:
            yield
        finally:
            self.end(token)

    @contextlib.contextmanager
    def collecting(self) -> Iterator[None]:
        """While a collection runs: it keeps what was put since the oldest open session."""
        with self._lock:
            if self._cutoff is not None:
                raise InUse("garbage collection is already running")
            self._cutoff = min(self._sessions.values(), default=self._seq)
        try:
            yield
        finally:
            with self._lock:
                self._cutoff = None
                self.forgotten = set()

    def unsafe_to_drop(self, blob_ids: Iterable[bytes]) -> set[bytes]:
        """Of these blobs, the ones put since the running collection's cutoff."""
        with self._lock:
            cutoff = self._cutoff if self._cutoff is not None else -1
            recent = self._recent
            return {i for i in blob_ids if recent.get(i, -1) > cutoff}
