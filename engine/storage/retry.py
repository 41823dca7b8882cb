"""The retry filter: exponential backoff, only for errors that say they are temporary."""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..errors import BackendError
from .backend import Backend
from .filter import Filter

log = logging.getLogger(__name__)
T = TypeVar("T")

# Set by a thread that may be told to stop (the spool's drain): once its event
# is set, a call backing off gives up at once instead of waiting out its
# attempts (12-24 s of them, which kept a stopping process alive that long).
give_up: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("give_up", default=None)

# 8 attempts, 0.25 s doubling to at most 8 s, each wait jittered to 50-100 %:
# 12-24 s in all, enough to ride out a restart of the storage service.
ATTEMPTS = 8
FIRST_DELAY = 0.25
MAX_DELAY = 8.0
# While the pool is known offline (a call has spent all its attempts, or the
# pool could not be reached when it was opened) a read gives up after about
# this long: a read of what is not on local disk fails with EIO instead of
# hanging, and the pool still gets a few tries to come back. Writes keep
# their full attempts (the spool retries them anyway).
OFFLINE_READ_WAIT = 10.0


class Retry(Filter):
    """Thread-safe: `_lock` guards `retries`, the count of calls made again, and `offline`.

    `offline` is why the pool is known unreachable (None while it answers):
    set when a call spends its attempts on a temporary error, cleared by any
    call that succeeds.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        attempts: int = ATTEMPTS,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__(inner)
        self.attempts = max(1, attempts)
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.retries = 0
        self.offline: str | None = None
        self._lock = threading.Lock()

    def mark_offline(self, reason: str) -> None:
        with self._lock:
            self.offline = reason

    def _read_deadline(self) -> float | None:
        with self._lock:
            return None if self.offline is None else time.monotonic() + OFFLINE_READ_WAIT

    def _call(self, what: str, fn: Callable[[], T], deadline: float | None = None) -> T:
        delay = self.first_delay
        for attempt in range(1, self.attempts + 1):
            try:
                result = fn()
            except BackendError as e:
                delay = self._back_off(what, attempt, e, delay, deadline)
            else:
                self._answered()
                return result
        raise AssertionError("unreachable")

    def _answered(self) -> None:
        if self.offline is not None:  # read unlocked: the common case, a pool that answers, takes no lock
            with self._lock:
                self.offline = None

    def _back_off(self, what: str, attempt: int, error: BackendError, delay: float, deadline: float | None) -> float:
        """Raise `error` if it is permanent or the attempts (or the time a read has offline) are spent.

        Else wait and return the next delay.
        """
        if not error.temporary:
            raise error
        if attempt == self.attempts or (deadline is not None and time.monotonic() >= deadline):
            self.mark_offline(str(error))
            raise error
        stop = give_up.get()
        if stop is not None and stop.is_set():
            raise error
        wait = delay * random.uniform(0.5, 1.0)  # jitter: clients that failed together retry apart
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        log.info("%s failed (attempt %d of %d), retrying in %.2f s: %s", what, attempt, self.attempts, wait, error)
        with self._lock:
            self.retries += 1
        if stop is None:
            self.sleep(wait)
        elif stop.wait(wait):
            raise error  # the caller is stopping: no more attempts
        return min(delay * 2, self.max_delay)

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._call(f"put {key}", lambda: self.inner.put(key, data))

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(f"get {key}", lambda: self.inner.get(key, offset, length), self._read_deadline())

    def stat(self, key: str) -> int | None:
        return self._call(f"stat {key}", lambda: self.inner.stat(key), self._read_deadline())

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self.inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """A listing that fails part-way resumes after the last key it gave (listings are sorted)."""
        last: str | None = None
        delay = self.first_delay
        deadline = self._read_deadline()
        for attempt in range(1, self.attempts + 1):
            try:
                for key, size in self.inner.list(prefix):
                    if last is None or key > last:
                        last = key
                        yield key, size
                self._answered()
                return
            except BackendError as e:
                delay = self._back_off(f"list {prefix}", attempt, e, delay, deadline)
