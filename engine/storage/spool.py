"""The write-back spool: a put lands durably on local disk and drains to the pool in the background.

A backup finishes at local-disk speed however slow the pool is, and keeps
going while the pool is offline. The queue is the spool directory itself, so
it survives restarts: opening a spool queues again whatever is in it. Reads
of a key still queued come from the spool. Every put is numbered;
`drained_through()` says up to which number everything has reached the pool
(the deployment shows a snapshot as stored from then on).
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import private
from ..errors import ObjectNotFound
from .backend import Backend
from .filter import Filter
from .local import LocalBackend
from .retry import give_up

log = logging.getLogger(__name__)
BACKOFF_MAX = 30.0  # seconds between attempts while the pool stays unreachable
# A stopping spool waits this long for uploads under way. One cut short is
# uploaded again on the next start (the object stays queued on disk); waiting
# for it while the pool is down kept a stopping mount alive for 25-70 s.
STOP_WAIT = 2.0
DELETE_WAIT = 60.0  # a delete waits this long for an upload of the same key


class Spool(Filter):
    """Thread-safe. `_lock` (with `_changed`) guards the queue, the numbers and the state."""

    def __init__(self, inner: Backend, directory: str | os.PathLike[str], max_bytes: int | None = None):
        super().__init__(inner)
        self.local = LocalBackend(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: OrderedDict[str, tuple[int, int]] = OrderedDict()  # key -> (number, size)
        self._draining: set[str] = set()
        self._deleted: set[str] = set()  # deleted while its upload ran: delete again after
        # Keys a put is writing to the spool directory now: an upload of the key's older bytes that
        # ends meanwhile must leave the file (it may be the new one) and its queue entry alone.
        self._putting: dict[str, int] = {}
        self._seq = 0
        self._bytes = 0
        self.online = True
        self.last_error: str | None = None
        # Run before the next upload, until it passes once (the pool's identity check, where the
        # pool could not be reached when it was opened).
        self.before_upload: Callable[[], object] | None = None
        self._stop = False
        self._stopping = threading.Event()  # set with `_stop`: a drain's retries give up at once
        self._closed = False  # close() has returned: a drain left behind changes nothing
        private.make_dirs(Path(directory))
        for key, size in sorted(self.local.list(), key=lambda ks: _mtime(self.local.root / ks[0])):
            self._enqueue(key, size)
        if self._queue:
            log.info("spool: %d objects (%d bytes) from before a restart to drain", len(self._queue), self._bytes)
        workers = max(1, inner.properties.connections)
        self._threads = [threading.Thread(target=self._drain, name="cairn-drain", daemon=True) for _ in range(workers)]
        for t in self._threads:
            t.start()

    def _enqueue(self, key: str, size: int) -> int:
        self._seq += 1
        old = self._queue.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._queue[key] = (self._seq, size)
        self._bytes += size
        return self._seq

    # -- the Backend calls ---------------------------------------------------

    def put(self, key: str, data: bytes | memoryview) -> None:
        with self._changed:
            while self.max_bytes is not None and self._bytes and self._bytes + len(data) > self.max_bytes:
                self._changed.wait(1.0)  # full: wait for the drain (back-pressure, not an error)
            self._putting[key] = self._putting.get(key, 0) + 1
        try:
            self.local.put(key, data)  # durable on return; a full disk raises NoSpace
        except BaseException:
            with self._changed:
                self._put_done(key)
            raise
        with self._changed:
            self._put_done(key)
            self._deleted.discard(key)
            self._enqueue(key, len(data))
            self._changed.notify_all()

    def _put_done(self, key: str) -> None:
        left = self._putting.pop(key) - 1
        if left:
            self._putting[key] = left

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        # Whatever the spool directory holds, queued here or left by another process on this machine
        # (a `cairn backup` beside a running mount) that has not drained it yet: one failed open
        # costs less than a request, and the pool may be offline.
        try:
            return self.local.get(key, offset, length)
        except ObjectNotFound:
            return self.inner.get(key, offset, length)  # never spooled, or drained meanwhile

    def stat(self, key: str) -> int | None:
        queued = self._queue.get(key)
        return queued[1] if queued is not None else self.inner.stat(key)

    def delete(self, key: str) -> None:
        with self._changed:
            queued = self._queue.pop(key, None)
            if queued is not None:
                self._bytes -= queued[1]
            if key in self._draining:
                self._deleted.add(key)  # should the wait below end first, the upload deletes what it brought back
                # Let an upload of it land first: else a get right after this call could still find it.
                end = time.monotonic() + DELETE_WAIT
                while key in self._draining and (left := end - time.monotonic()) > 0:
                    self._changed.wait(left)
            self._changed.notify_all()
        if queued is not None:
            self.local.delete(key)
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """The pool's listing and the queued keys, merged in key order (the contract: Retry resumes by key)."""
        with self._lock:
            queued = {k: size for k, (_, size) in self._queue.items() if k.startswith(prefix)}
        pooled = ((key, size) for key, size in self.inner.list(prefix) if key not in queued)
        yield from heapq.merge(pooled, sorted(queued.items()))

    def describe(self) -> str:
        return f"{self.inner.describe()} (write-back spool in {self.local.root})"

    # -- draining ------------------------------------------------------------

    def backlog(self) -> tuple[int, int]:
        """Objects and bytes not yet in the pool."""
        with self._lock:
            return len(self._queue), self._bytes

    def mark(self) -> int:
        """The number of the last put so far."""
        with self._lock:
            return self._seq

    def drained_through(self) -> int:
        """Every put numbered up to this has reached the pool."""
        with self._lock:
            if not self._queue:
                return self._seq
            return min(n for n, _ in self._queue.values()) - 1

    def wait_drained(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._queue:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def close(self) -> None:
        """Stop draining within about STOP_WAIT seconds; what is queued stays on disk for the next start.

        A drain still in an upload then is left behind (a daemon thread): it
        changes nothing once it returns.
        """
        with self._changed:
            self._stop = True
            self._stopping.set()
            self._changed.notify_all()
        end = time.monotonic() + STOP_WAIT
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
            if t.is_alive():
                log.info("spool: stopped with an upload under way; it is made again on the next start")
        with self._changed:
            self._closed = True

    def _next(self) -> str | None:
        with self._changed:
            while not self._stop:
                for key in self._queue:
                    if key not in self._draining:
                        self._draining.add(key)
                        return key
                self._changed.wait()
            return None

    def _drain(self) -> None:
        give_up.set(self._stopping)  # this thread's retries end when the spool stops
        delay = 0.1
        while (key := self._next()) is not None:
            try:
                self._upload(key)
                delay = 0.1
            except Exception as e:  # the pool is unreachable or failing: keep the object, try again later
                with self._changed:
                    self._draining.discard(key)
                    self.online, self.last_error = False, str(e)
                with self._changed:
                    if self._stop:
                        return
                    log.warning("spool: cannot drain %s (%s); retrying in %.1f s", key, e, delay)
                    self._changed.wait(delay)
                delay = min(BACKOFF_MAX, delay * 2)

    def _upload(self, key: str) -> None:
        with self._lock:
            queued = self._queue.get(key)
        if queued is not None:
            check = self.before_upload
            if check is not None:
                check()
                self.before_upload = None
            self.inner.put(key, self.local.get(key))
        with self._changed:
            if self._closed:  # left behind by close(): the queue is the next start's, which uploads it again
                return
            self._draining.discard(key)
            self.online, self.last_error = True, None
            gone = key in self._deleted  # deleted while uploading: the upload must not bring it back
            self._deleted.discard(key)
            current = self._queue.get(key)
            if (not gone and current is not None and queued is not None and current[0] == queued[0]
                    and key not in self._putting):  # fmt: skip
                del self._queue[key]
                self._bytes -= current[1]
                self.local.delete(key)  # under the lock: a new put of the key may not come between
            self._changed.notify_all()
        if gone:
            self.inner.delete(key)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
