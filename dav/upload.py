"""PUT: the body streams into the engine and takes its name only once it is complete.

The body goes into a file with no name (created, then unlinked while held
open, as a FUSE client may do), written in order, so the working tree chunks
it as it arrives and holds at most a few MiB of it in memory. When the body
is complete the file is linked under a temporary name, finished (its last
chunks stored) and renamed over the target in one step. A client that
disconnects, a body shorter than its Content-Length or a full disk leave the
old file, or no file, as it was.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_INSUFFICIENT_STORAGE, DAVError

from engine.errors import NotFound
from engine.meta import Stat
from engine.mount import MountView

from .errors import translated


class Upload:
    """One PUT body. Used by the one thread serving the request."""

    def __init__(self, view: MountView, parent: int, name: bytes, environ: dict[str, Any]):
        self.view = view
        self.parent = parent
        self.name = name
        self.expected = _length(environ)
        free = view.dep.free_bytes()
        if self.expected is not None and free and self.expected > free:
            raise DAVError(HTTP_INSUFFICIENT_STORAGE, context_info=f"{self.expected} bytes sent, {free} free")
        self.temp = b".cairn-put." + secrets.token_hex(8).encode()
        stat = view.create(parent, self.temp, 0o644)
        self.number = stat.ino
        self.open = True
        try:
            view.unlink(parent, self.temp)
        except BaseException:
            self.abort()
            raise
        self.offset = 0

    def write(self, data: bytes) -> int:
        with translated():  # a full disk is a 507, not wsgidav's 500
            written = self.view.write(self.number, self.offset, data)
        self.offset += written
        return written

    def writelines(self, pieces: Any) -> None:
        for data in pieces:
            self.write(data)

    def close(self) -> None:
        """Called by wsgidav after the body; committing is `commit`'s job."""

    def commit(self) -> Stat:
        """Give the complete body its name; replaces an existing file atomically."""
        if self.expected is not None and self.offset != self.expected:
            self.abort()
            raise DAVError(HTTP_BAD_REQUEST, context_info=f"body ended after {self.offset} of {self.expected} bytes")
        self.view.link(self.number, self.parent, self.temp)
        try:
            self.open = False
            self.view.release(self.number)  # stores the last chunks
            self.view.rename(self.parent, self.temp, self.parent, self.name)
        except BaseException:
            with contextlib.suppress(NotFound):
                self.view.unlink(self.parent, self.temp)
            raise
        return self.view.lookup(self.parent, self.name)

    def abort(self) -> None:
        """Drop the body: the nameless file goes when it is released."""
        if self.open:
            self.open = False
            self.view.release(self.number)


def _length(environ: dict[str, Any]) -> int | None:
    value = environ.get("CONTENT_LENGTH") or ""
    if not value:
        return None
    if not value.isdigit():
        raise DAVError(HTTP_BAD_REQUEST, context_info=f"bad Content-Length {value!r}")
    return int(value)
