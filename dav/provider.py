"""The wsgidav provider: a URL path resolved by lookups in the mount view."""

from __future__ import annotations

from typing import Any

from wsgidav.dav_error import HTTP_CONFLICT, HTTP_NOT_FOUND, DAVError
from wsgidav.dav_provider import DAVProvider

from engine.meta import Kind
from engine.mount import MountView

from .errors import translated
from .locks import Breakable, MayBreak
from .resources import File, Folder, Node
from .session import session_of


class CairnProvider(DAVProvider):  # type: ignore[misc]
    """Thread-safe: all state is in the mount view, and per request in its session."""

    def __init__(self, view: MountView, may_break: MayBreak | None = None):
        super().__init__()
        self.view = view
        self.may_break = may_break

    def is_readonly(self) -> bool:
        return False

    def set_lock_manager(self, lock_manager: Any) -> None:
        """wsgidav's lock manager; with `may_break`, one that lets those it names release others' locks."""
        if lock_manager is not None and self.may_break is not None:
            lock_manager = Breakable(lock_manager, self.may_break)
        super().set_lock_manager(lock_manager)

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
