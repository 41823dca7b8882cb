"""A size-bounded LRU cache of decoded blobs, and the "memory only" mode of reads.

An async caller (the FUSE loop) may try a read with `memory_only` set: a
cache hit returns at once, a miss raises WouldBlock instead of doing I/O,
and the caller retries on a worker thread.
"""

from __future__ import annotations

import contextvars
import threading
from collections import OrderedDict

memory_only: contextvars.ContextVar[bool] = contextvars.ContextVar("memory_only", default=False)


class WouldBlock(Exception):
    """The answer is not in memory; ask again where blocking is allowed."""


def check_may_block() -> None:
    if memory_only.get():
        raise WouldBlock


class BlobCache:
    """Thread-safe; `_lock` guards `_items` and `_size`."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0

    def contains(self, key: bytes) -> bool:
        return key in self._items  # a dict lookup is atomic; no LRU bump

    def put(self, key: bytes, value: bytes) -> None:
        if len(value) > self.capacity // 4:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = value
            self._size += len(value)
            while self._size > self.capacity:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)
