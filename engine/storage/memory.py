"""A backend that keeps objects in a dict: for tests and throwaway pools."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..errors import ObjectNotFound
from .backend import Properties, check_key


class MemoryBackend:
    """Thread-safe; `_lock` guards `_objects`."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def properties(self) -> Properties:
        return Properties(connections=4, consistent_listing=True, local=True)

    def put(self, key: str, data: bytes | memoryview) -> None:
        with self._lock:
            self._objects[check_key(key)] = bytes(data)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._lock:
            data = self._objects.get(key)
        if data is None:
            raise ObjectNotFound(f"no object {key}")
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def stat(self, key: str) -> int | None:
        with self._lock:
            data = self._objects.get(key)
        return None if data is None else len(data)

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        with self._lock:
            items = [(k, len(v)) for k, v in self._objects.items() if k.startswith(prefix)]
        yield from sorted(items)

    def describe(self) -> str:
        return "memory"
