"""The `images/` directory of a source: what the mount asks of the image pool.

The image pool lives above the engine (image/), so the mount reaches it
through this protocol; the appliance hands an implementation to MountView.
Image nodes are numbered in space IMAGE (nodes.py) by the implementation.
"""

from __future__ import annotations

from typing import Protocol

from ..deployment import SourceInfo
from ..meta import Stat


class ImageProvider(Protocol):
    """Thread-safe, as MountView is."""

    def listdir(self, source: SourceInfo) -> list[tuple[bytes, Stat]]:
        """`<disk>.img` for each writable image, `<disk>@<snapshot>.img` for each version."""
        ...

    def lookup(self, source: SourceInfo, name: bytes) -> Stat: ...

    def getattr(self, number: int) -> Stat: ...

    def read(self, number: int, offset: int, size: int) -> bytes: ...

    def create(self, source: SourceInfo, name: bytes, mode: int) -> Stat: ...

    def unlink(self, source: SourceInfo, name: bytes) -> None: ...

    def truncate(self, number: int, size: int) -> Stat: ...

    def open(self, number: int, write: bool) -> None: ...

    def release(self, number: int) -> None: ...

    def write(self, number: int, offset: int, data: bytes) -> int: ...

    def fsync(self, number: int) -> None: ...
