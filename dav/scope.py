"""What each signed-in user may see and change on the share, and where a COPY or MOVE lands.

A scope maps a user name to a predicate `allowed(source, action)` (source None
for the share's root; actions: see, restore, run, configure, and manage: add
or remove that source as a whole). It sits after wsgidav's authenticator: a
source the user may not see is a 404, a change they may not make a 403, and
the root lists only the sources they may see.

The Destination of a COPY or MOVE is parsed here once, the way wsgidav parses
it (decode, then split the URL, then normalize the path), and the header is
replaced by a spelling that wsgidav reads back as exactly that path: the scope
is checked on the very path the request will write to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import ParseResult, quote, unquote, urlparse, urlunsplit

from wsgidav import util
from wsgidav.dav_error import HTTP_BAD_GATEWAY, HTTP_BAD_REQUEST, HTTP_FORBIDDEN, HTTP_NOT_FOUND, DAVError
from wsgidav.mw.base_mw import BaseMiddleware

Allowed = Callable[[str | None, str], bool]
ScopeOf = Callable[[str], Allowed]
KEY = "cairn.allowed"
WRITES = {"PUT", "DELETE", "MKCOL", "MOVE", "PROPPATCH", "LOCK", "UNLOCK"}
# What a host (with port, user info or an IPv6 literal) keeps unencoded when the Destination is spelled again.
_NETLOC_SAFE = ":@[]!$&'()*+,;="


def source_of(path: str) -> str | None:
    """The source a decoded path under the share is in; None for the root."""
    first = path.lstrip("/").split("/", 1)[0]
    return first or None


def _parse(header: str) -> ParseResult:
    """A Destination header as wsgidav 4 splits it: percent-decoded first, then parsed as a URL."""
    try:
        text = util.re_encode_wsgi(header)  # a WSGI header is Latin-1; clients send UTF-8, as in the path
        return urlparse(unquote(text, errors="strict"), allow_fragments=False)
    except UnicodeError:
        raise DAVError(HTTP_BAD_REQUEST, context_info="the Destination is not UTF-8") from None


def destination(environ: dict[str, Any], mount: str) -> str:
    """The path under the share that a COPY or MOVE writes to; its Destination header is rewritten to name it.

    wsgidav (request_server's copy and move) decodes the header, splits it
    with `urlparse`, normalizes the path and strips the mount path. The header
    is spelled again here (path and host percent-encoded, nothing else) and
    must parse back to the same scheme, host and path, so the path checked
    here is the path wsgidav uses.
    """
    parts = _parse(environ["HTTP_DESTINATION"])
    spelled = urlunsplit((parts.scheme, quote(parts.netloc, safe=_NETLOC_SAFE), quote(parts.path, safe="/"), "", ""))
    again = _parse(spelled)
    if (again.scheme, again.netloc, again.path) != (parts.scheme, parts.netloc, parts.path):
        raise DAVError(HTTP_BAD_REQUEST, context_info="the Destination can be read more than one way")
    environ["HTTP_DESTINATION"] = spelled
    path = str(util.normalize_path(parts.path or "/"))  # a 400 for a path that climbs above the root
    if mount:
        if not path.startswith(mount + "/"):
            raise DAVError(HTTP_BAD_GATEWAY, context_info="the Destination is not on this share")
        path = path[len(mount) :]
    return path


class Scope(BaseMiddleware):  # type: ignore[misc]
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        scope: ScopeOf | None = self.config.get("cairn", {}).get("scope")
        try:
            target = None
            if method in ("COPY", "MOVE") and "HTTP_DESTINATION" in environ:
                target = destination(environ, self.config.get("mount_path") or "")
            if scope is not None:
                allowed = environ[KEY] = scope(environ.get("wsgidav.auth.user_name", ""))
                self._check(allowed, environ["PATH_INFO"], "run" if method in WRITES else "see")
                if target is not None:
                    self._check(allowed, target, "run")
        except DAVError as e:
            return util.send_status_response(environ, start_response, e)  # type: ignore[no-any-return]
        return self.next_app(environ, start_response)  # type: ignore[no-any-return]

    @staticmethod
    def _check(allowed: Allowed, path: str, action: str) -> None:
        source = source_of(path)
        if action == "run" and len([p for p in path.split("/") if p]) <= 1:
            # the root itself, or a source as a whole (MKCOL adds one, DELETE removes one)
            if not allowed(source, "manage"):
                raise DAVError(HTTP_FORBIDDEN, "only an administrator of its group may add or remove a source")
            return
        if source is None:
            return
        if not allowed(source, "see"):
            raise DAVError(HTTP_NOT_FOUND)
        if not allowed(source, action):
            raise DAVError(HTTP_FORBIDDEN, f"you may not {action} {source}")
