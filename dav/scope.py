"""What each signed-in user may see and change on the share, when the app is given a scope.

A scope maps a user name to a predicate `allowed(source, action)` (source None
for the share's root; actions: see, restore, run, configure). It sits after
wsgidav's authenticator: a source the user may not see is a 404, a change
they may not make a 403, and the root lists only the sources they may see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from wsgidav import util
from wsgidav.dav_error import HTTP_FORBIDDEN, HTTP_NOT_FOUND, DAVError
from wsgidav.mw.base_mw import BaseMiddleware

Allowed = Callable[[str | None, str], bool]
ScopeOf = Callable[[str], Allowed]
KEY = "cairn.allowed"
WRITES = {"PUT", "DELETE", "MKCOL", "MOVE", "PROPPATCH", "LOCK", "UNLOCK"}


def source_of(path: str) -> str | None:
    """The source a decoded path (PATH_INFO, or an unquoted Destination) is in; None for the root."""
    first = path.lstrip("/").split("/", 1)[0]
    return first or None


class Scope(BaseMiddleware):  # type: ignore[misc]
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        scope: ScopeOf | None = self.config.get("cairn", {}).get("scope")
        if scope is None:
            return self.next_app(environ, start_response)  # type: ignore[no-any-return]
        allowed = environ[KEY] = scope(environ.get("wsgidav.auth.user_name", ""))
        method = environ["REQUEST_METHOD"]
        try:
            self._check(allowed, environ["PATH_INFO"], "run" if method in WRITES else "see")
            if method in ("COPY", "MOVE"):
                # PATH_INFO arrives decoded; the Destination header is a URL, decoded here once.
                target = unquote(urlsplit(environ.get("HTTP_DESTINATION", "")).path)
                mount = environ.get("SCRIPT_NAME", "")
                self._check(allowed, target[len(mount) :] if target.startswith(mount) else target, "run")
        except DAVError as e:
            return util.send_status_response(environ, start_response, e)  # type: ignore[no-any-return]
        return self.next_app(environ, start_response)  # type: ignore[no-any-return]

    @staticmethod
    def _check(allowed: Allowed, path: str, action: str) -> None:
        source = source_of(path)
        if source is None or (action == "run" and len([p for p in path.split("/") if p]) == 1):
            # the root itself, or a source as a whole (MKCOL adds one, DELETE removes one)
            if action == "run" and not allowed(None, "configure"):
                raise DAVError(HTTP_FORBIDDEN, "only an administrator may add or remove sources")
            return
        if not allowed(source, "see"):
            raise DAVError(HTTP_NOT_FOUND)
        if not allowed(source, action):
            raise DAVError(HTTP_FORBIDDEN, f"you may not {action} {source}")
