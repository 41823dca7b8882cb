"""Builds a pool's backend from its configuration: the one place filters are stacked."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgument
from .backend import Backend
from .local import LocalBackend
from .memory import MemoryBackend


def open_backend(config: dict[str, Any]) -> Backend:
    """`config` is the pool's backend configuration as stored in the catalog.

    Filters (verify, ratelimit, retry, spool, read cache) wrap the backend
    here, in this order, once they exist.
    """
    kind = config.get("kind")
    if kind == "local":
        return LocalBackend(config["path"])
    if kind == "memory":
        return MemoryBackend()
    raise InvalidArgument(f"unknown backend kind {kind!r}")
