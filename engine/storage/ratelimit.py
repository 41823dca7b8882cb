"""The ratelimit filter: requests per window per operation, bytes per second, and backoff when throttled.

Operation classes are the protocol's calls: put, get, stat, delete, list.
A limit of 100 puts per 5 s lets a put start only when fewer than 100
started in the 5 s before it. A multipart put counts every request it
makes (the backend's properties say how many). When the service answers
429 or 503 SlowDown, every call waits: Retry-After if the service gave
one, else a backoff that doubles with each throttle in a row.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import InvalidArgument, Throttled
from .backend import Backend
from .filter import Filter

T = TypeVar("T")
OPERATIONS = ("put", "get", "stat", "delete", "list")
FIRST_BACKOFF = 1.0  # AWS asks clients that see SlowDown to back off from about a second
MAX_BACKOFF = 60.0


@dataclass
class _Window:
    """Start times of the last `count` requests of one operation class (future ones are reservations)."""

    count: int
    seconds: float
    starts: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        self.starts = deque(maxlen=self.count)

    def reserve(self, now: float) -> float:
        slot = now
        if len(self.starts) == self.count:
            slot = max(now, self.starts[0] + self.seconds)
        self.starts.append(slot)
        return slot


class RateLimit(Filter):
    """Thread-safe: `_lock` guards the windows, the byte clock, the pause and the counters.

    A call reserves its start time under the lock and sleeps outside it.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        requests: dict[str, tuple[int, float]] | None = None,
        bytes_per_second: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__(inner)
        self._windows = {op: _Window(count, seconds) for op, (count, seconds) in (requests or {}).items()}
        self.bytes_per_second = bytes_per_second
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._bytes_free_at = 0.0  # when the bytes already sent have drained at bytes_per_second
        self._paused_until = 0.0
        self._throttles_in_a_row = 0
        self.throttled = 0  # answers of 429/503 SlowDown seen
        self.waited = 0.0  # seconds calls spent waiting here

    def _admit(self, op: str, requests: int = 1, nbytes: int = 0) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._paused_until, self._bytes_free_at if nbytes else now)
            window = self._windows.get(op)
            if window is not None:
                for _ in range(requests):
                    start = max(start, window.reserve(now))
            if self.bytes_per_second and nbytes:
                self._bytes_free_at = start + nbytes / self.bytes_per_second
            self.waited += start - now
        if start > now:
            self.sleep(start - now)

    def _charge(self, nbytes: int) -> None:
        """Bytes read: known only afterwards, they delay the calls that follow."""
        if self.bytes_per_second and nbytes:
            with self._lock:
                self._bytes_free_at = max(self.clock(), self._bytes_free_at) + nbytes / self.bytes_per_second

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            result = fn()
        except Throttled as e:
            self._throttled(e)
            raise
        with self._lock:
            self._throttles_in_a_row = 0
        return result

    def _throttled(self, e: Throttled) -> None:
        """Pause every call: for Retry-After if given, else for a backoff doubling per throttle in a row."""
        with self._lock:
            self.throttled += 1
            self._throttles_in_a_row += 1
            backoff = e.retry_after
            if backoff is None:
                backoff = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (self._throttles_in_a_row - 1))
            self._paused_until = max(self._paused_until, self.clock() + backoff)

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._admit("put", self.properties.put_requests(len(data)), len(data))
        self._call(lambda: self.inner.put(key, data))

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        self._admit("get", nbytes=length or 0)
        data = self._call(lambda: self.inner.get(key, offset, length))
        if length is None:
            self._charge(len(data))
        return data

    def stat(self, key: str) -> int | None:
        self._admit("stat")
        return self._call(lambda: self.inner.stat(key))

    def delete(self, key: str) -> None:
        self._admit("delete")
        self._call(lambda: self.inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        # One admission per listing: a page holds 1,000 keys, and listings are rare (rebuild, GC).
        self._admit("list")
        try:
            yield from self.inner.list(prefix)
        except Throttled as e:
            self._throttled(e)
            raise


def from_config(inner: Backend, config: dict[str, Any]) -> RateLimit:
    """`{"requests": {"put": [100, 5]}, "bytes_per_second": 50000000}`; bad settings are refused by name."""
    unknown = set(config) - {"requests", "bytes_per_second"}
    if unknown:
        raise InvalidArgument(f"unknown ratelimit settings: {', '.join(sorted(unknown))}")
    requests: dict[str, tuple[int, float]] = {}
    for op, limit in dict(config.get("requests", {})).items():
        if op not in OPERATIONS:
            raise InvalidArgument(f"ratelimit: no operation {op!r}; there are {', '.join(OPERATIONS)}")
        try:
            count, seconds = int(limit[0]), float(limit[1])
        except (TypeError, ValueError, IndexError) as e:
            raise InvalidArgument(f"ratelimit for {op} must be [requests, seconds], not {limit!r}") from e
        if count < 1 or seconds <= 0:
            raise InvalidArgument(f"ratelimit for {op} must allow at least 1 request in more than 0 s")
        requests[op] = (count, seconds)
    rate = config.get("bytes_per_second")
    if rate is not None and (not isinstance(rate, int | float) or rate <= 0):
        raise InvalidArgument("ratelimit bytes_per_second must be a positive number")
    return RateLimit(inner, requests=requests, bytes_per_second=rate)
