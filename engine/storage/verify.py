"""The verify filter: eventual-consistency assurance for writes.

After each put it reads the object back (after `delay`, if set) and compares
its BLAKE3 with what was written. A GET that misses or differs is retried,
then the PUT itself, a bounded number of times; then the put fails loudly.
A service that acknowledges a write it then loses is caught here, before
the catalog records the pack.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import blake3

from ..errors import BackendError, InvalidArgument, ObjectNotFound
from .backend import Backend
from .filter import Filter

log = logging.getLogger(__name__)

READS = 3  # GETs per PUT before writing again
WRITES = 2  # PUTs before giving up
READ_DELAY = 0.5  # seconds before the second GET, doubling for each further one


class Verify(Filter):
    """Thread-safe: `_lock` guards the counters `mismatches` and `rewrites`."""

    def __init__(
        self,
        inner: Backend,
        *,
        delay: float = 0.0,
        reads: int = READS,
        writes: int = WRITES,
        read_delay: float = READ_DELAY,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__(inner)
        self.delay = delay
        self.reads = max(1, reads)
        self.writes = max(1, writes)
        self.read_delay = read_delay
        self.sleep = sleep
        self._lock = threading.Lock()
        self.mismatches = 0  # read-backs that missed or differed
        self.rewrites = 0  # PUTs made again

    def put(self, key: str, data: bytes | memoryview) -> None:
        digest = blake3.blake3(data).digest()
        for write in range(self.writes):
            if write:
                with self._lock:
                    self.rewrites += 1
                log.warning("%s did not read back as written; writing it again", key)
            self.inner.put(key, data)
            if self._reads_back(key, digest):
                return
        message = (
            f"{key} in {self.describe()} did not read back as written after {self.writes} PUTs "
            f"of {self.reads} GETs each: the service loses or delays writes"
        )
        log.error("%s", message)
        raise BackendError(message)

    def _reads_back(self, key: str, digest: bytes) -> bool:
        wait = self.delay
        for read in range(self.reads):
            if wait:
                self.sleep(wait)
            wait = self.read_delay * 2**read
            try:
                if blake3.blake3(self.inner.get(key)).digest() == digest:
                    return True
            except ObjectNotFound:
                pass
            with self._lock:
                self.mismatches += 1
        return False


def from_config(inner: Backend, config: dict[str, Any]) -> Verify:
    """`{"delay": 0, "reads": 3, "writes": 2}`; bad settings are refused by name."""
    unknown = set(config) - {"delay", "reads", "writes", "read_delay"}
    if unknown:
        raise InvalidArgument(f"unknown verify settings: {', '.join(sorted(unknown))}")
    try:
        delay, read_delay = float(config.get("delay", 0.0)), float(config.get("read_delay", READ_DELAY))
        reads, writes = int(config.get("reads", READS)), int(config.get("writes", WRITES))
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"verify settings must be numbers: {e}") from e
    if min(delay, read_delay) < 0 or min(reads, writes) < 1:
        raise InvalidArgument("verify needs delays of 0 s or more and at least 1 read and 1 write")
    return Verify(inner, delay=delay, reads=reads, writes=writes, read_delay=read_delay)
