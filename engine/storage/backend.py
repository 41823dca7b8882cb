"""The Backend protocol: a flat namespace of immutable objects named by keys.

Keys are `/`-separated relative paths (`packs/6e/fa/6efa01…`). Objects are
written whole and never modified in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Properties:
    """What a backend can do; worker pools and limiters are sized from this."""

    connections: int = 2
    consistent_listing: bool = True
    # Whether data stays on this machine (a local pool needs no read cache).
    local: bool = True
    # Objects above this size are uploaded in parts of `part_size` (one
    # request each, plus two to start and complete); 0: always one request.
    multipart_threshold: int = 0
    part_size: int = 0

    def put_requests(self, size: int) -> int:
        """How many requests a put of `size` bytes costs (rate limits count them)."""
        if not self.multipart_threshold or size <= self.multipart_threshold:
            return 1
        return -(-size // self.part_size) + 2


class Backend(Protocol):
    """Stores objects. Implementations are thread-safe."""

    @property
    def properties(self) -> Properties: ...

    def put(self, key: str, data: bytes | memoryview) -> None:
        """Store an object durably; on return it survives a crash."""

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read an object, or a byte range of it. ObjectNotFound if absent."""

    def stat(self, key: str) -> int | None:
        """The object's size, or None if there is no such object."""

    def delete(self, key: str) -> None:
        """Remove an object; removing an absent one is not an error."""

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(key, size) of every object whose key starts with prefix."""

    def describe(self) -> str:
        """A short human description, for messages and the UI."""


def check_key(key: str) -> str:
    """Refuse keys that could escape a backend's root."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key
