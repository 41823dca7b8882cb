"""The wsgidav provider: a URL path resolved by lookups in the mount view."""

from __future__ import annotations

from typing import Any

from wsgidav.dav_error import HTTP_CONFLICT, HTTP_NOT_FOUND, DAVError
from wsgidav.dav_provider import DAVProvider

from engine.meta import Kind
from engine.mount import MountView

from .errors import translated
from .resources import File, Folder, Node
from .session import session_of


class CairnProvider(DAVProvider):  # type: ignore[misc]
    """Thread-safe: all state is in the mount view, and per request in its session."""

    def __init__(self, view: MountView):
        super().__init__()
        self.view = view

    def is_readonly(self) -> bool:
        return False

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Node | None:
        session = session_of(environ, self.view)
        try:
            with translated():
                stats = session.resolve(path)
        except DAVError as e:
            if e.value in (HTTP_NOT_FOUND, HTTP_CONFLICT):  # no such name, or a file on the way
                return None
            raise
        stat, parent = stats[-1], (stats[-2] if len(stats) > 1 else None)
        if stat.kind == Kind.DIR:
            return Folder(path, environ, session, stat, parent)
        if stat.kind == Kind.FILE and parent is not None:
            return File(path, environ, session, stat, parent)
        return None
