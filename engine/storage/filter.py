"""The base of every filter: it wraps a backend and passes every call through.

A filter overrides only the calls it changes, and `inner` unwraps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from .backend import Backend, Properties

T = TypeVar("T")


class Filter:
    """Thread-safe if `inner` is and the subclass says so."""

    def __init__(self, inner: Backend):
        self.inner = inner

    @property
    def properties(self) -> Properties:
        return self.inner.properties

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.inner.put(key, data)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(key, offset, length)

    def stat(self, key: str) -> int | None:
        return self.inner.stat(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        return self.inner.list(prefix)

    def describe(self) -> str:
        return self.inner.describe()


def find_layer(backend: Backend, kind: type[T]) -> T | None:
    """The outermost layer of a stack that is a `kind`, or None."""
    layer: object = backend
    while True:
        if isinstance(layer, kind):
            return layer
        if not isinstance(layer, Filter):
            return None
        layer = layer.inner
