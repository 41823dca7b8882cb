"""A fault-injecting backend for tests: it wraps a real backend and misbehaves on schedule.

It fails the Nth call of an operation (with any error, such as a temporary
one or a 503 SlowDown), drops the Nth put silently (acknowledged, never
stored), and serves stale reads: for a while after a put, reads of that key
see the object as it was before. It counts every call it passes on.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator

from ..errors import BackendError, ObjectNotFound, Throttled
from .backend import Backend
from .filter import Filter


class FaultyBackend(Filter):
    """Thread-safe: `_lock` guards the schedule, `calls` and the stale versions."""

    def __init__(self, inner: Backend):
        super().__init__(inner)
        self.calls: Counter[str] = Counter()  # calls made to each operation, faulty ones included
        self.dropped: list[str] = []  # keys of the puts dropped
        self._failures: dict[tuple[str, int], BackendError] = {}
        self._drops: set[int] = set()
        self._stale_reads = 0
        self._stale: dict[str, tuple[int, bytes | None]] = {}  # key -> (reads left, the old object)
        self._lock = threading.Lock()

    # -- the schedule ------------------------------------------------------

    def fail(self, op: str, calls: Iterable[int], error: BackendError | None = None) -> None:
        """Make these calls of `op` (1 is the first) raise `error` (default: a temporary BackendError)."""
        with self._lock:
            for n in calls:
                self._failures[(op, n)] = error or BackendError(f"injected failure of {op} #{n}", temporary=True)

    def slow_down(self, op: str, calls: Iterable[int], retry_after: float | None = None) -> None:
        """Answer these calls of `op` as a service answers 503 SlowDown."""
        for n in calls:
            self.fail(op, [n], Throttled(f"injected SlowDown of {op} #{n}", retry_after=retry_after))

    def drop_puts(self, calls: Iterable[int]) -> None:
        """Acknowledge these puts (1 is the first) but store nothing."""
        with self._lock:
            self._drops.update(calls)

    def stale_reads(self, count: int) -> None:
        """After each later put, the next `count` gets and stats of its key see the old object."""
        with self._lock:
            self._stale_reads = count

    # -- the protocol --------------------------------------------------------

    def _start(self, op: str) -> int:
        with self._lock:
            self.calls[op] += 1
            n = self.calls[op]
            error = self._failures.pop((op, n), None)
        if error is not None:
            raise error
        return n

    def _stale_view(self, key: str) -> tuple[bool, bytes | None]:
        with self._lock:
            left, old = self._stale.get(key, (0, None))
            if not left:
                return False, None
            self._stale[key] = (left - 1, old)
            return True, old

    def put(self, key: str, data: bytes | memoryview) -> None:
        n = self._start("put")
        with self._lock:
            dropped = n in self._drops
            if dropped:
                self.dropped.append(key)
            stale = self._stale_reads
        if stale:
            old = self.inner.get(key) if self.inner.stat(key) is not None else None
            with self._lock:
                self._stale[key] = (stale, old)
        if not dropped:
            self.inner.put(key, data)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        self._start("get")
        stale, old = self._stale_view(key)
        if not stale:
            return self.inner.get(key, offset, length)
        if old is None:
            raise ObjectNotFound(f"no object {key} (a stale read)")
        return old[offset:] if length is None else old[offset : offset + length]

    def stat(self, key: str) -> int | None:
        self._start("stat")
        stale, old = self._stale_view(key)
        if stale:
            return None if old is None else len(old)
        return self.inner.stat(key)

    def delete(self, key: str) -> None:
        self._start("delete")
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        self._start("list")
        return self.inner.list(prefix)
