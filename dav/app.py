"""The WebDAV share as a WSGI app (`make_app`) and served by cheroot (`Server`).

The appliance wires: it opens the deployment, builds the mount view and
the user list, and calls these.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from wsgidav.error_printer import ErrorPrinter
from wsgidav.http_authenticator import HTTPAuthenticator
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from engine.mount import MountView

from .auth import Limiter, UserList
from .guard import HTTPServer
from .listing import Listing
from .locks import Storage
from .provider import CairnProvider
from .scope import Scope, ScopeOf, source_of
from .session import KEY, Session
from .streams import START_RESPONSE, Streams

log = logging.getLogger(__name__)
BLOCK_SIZE = 1 << 20  # bytes per read of a PUT body and per write of a GET: an average chunk
MAX_XML_BODY = 1 << 20  # PROPFIND, PROPPATCH, LOCK bodies are read whole; real ones are a few KiB
# A request path (and a Destination) is refused if it holds an encoded slash or
# NUL, or a dot segment once decoded: names never contain "/" or NUL, so these
# only ever mean harm. A backslash is an ordinary character in a name.
_ENCODED = re.compile(r"%2f|%00", re.IGNORECASE)
_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")
# The share has the web UI's origin (one host and port): nothing it serves may
# run there as a page. Files are sent as downloads (resources.py), and no
# answer is sniffed into HTML or allowed to run anything.
_EVERY_RESPONSE = [("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", "default-src 'none'; sandbox")]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def make_app(
    view: MountView, users: dict[str, str], *, anonymous: bool = False, mount_path: str = "",
    scope: ScopeOf | None = None, limiter: Limiter | None = None,
) -> WSGIApp:  # fmt: skip
    """The share at `mount_path` ("" or e.g. "/dav"): users maps names to scrypt hashes; `scope`
    (see scope.py) limits what each user sees and changes; `limiter` counts failed sign-ins (the
    caller's, to share it with its other ways in; else the share's own)."""
    config = {
        "provider_mapping": {"/": CairnProvider(view, _breaker(scope))},
        "mount_path": mount_path or None,
        # Streams before ErrorPrinter, which would hold back the start of a streamed response.
        "middleware_stack": [HTTPAuthenticator, Scope, Streams, ErrorPrinter, Listing, RequestResolver],
        "http_authenticator": {
            "domain_controller": UserList,
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
        },
        "cairn": {"users": users, "anonymous": anonymous, "scope": scope, "limiter": limiter or Limiter()},
        "lock_storage": Storage(),  # in memory: locks are short-lived (locks.py) and do not outlive a restart
        "property_manager": None,  # dead properties are xattrs (see props.py)
        "block_size": BLOCK_SIZE,
        "honor_mtime_header": True,  # X-OC-Mtime from ownCloud/Nextcloud clients and rclone
        "hotfixes": {"emulate_win32_lastmod": True, "re_encode_path_info": True},
        "add_header_MS_Author_Via": True,
        "verbose": 1,
        "logging": {"enable": False},
        "dir_browser": {"enable": False},
    }
    return Share(WsgiDAVApp(config), view)


def _breaker(scope: ScopeOf | None) -> Callable[[str, str], bool] | None:
    """Who may release another user's lock on a path: whoever may configure its source."""
    if scope is None:
        return None
    return lambda user, path: scope(user)(source_of(path), "configure")


class Share:
    """The outer WSGI app: refuses traversal, and ends each request's session. Thread-safe."""

    def __init__(self, app: WSGIApp, view: MountView):
        self.app = app
        self.view = view

    def __call__(self, environ: dict[str, Any], server_start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response = _guarded(_closing_unread(environ, server_start_response))
        bad_path = _refuse_path(environ)
        if bad_path is not None:
            text = bad_path.encode() + b"\n"
            start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
            return [text]
        refused = _refuse_body(environ)
        if refused is not None:
            text = refused[1].encode() + b"\n"
            start_response(refused[0], [
                ("Content-Type", "text/plain"), ("Content-Length", str(len(text))), ("Connection", "close"),
            ])  # fmt: skip
            return [text]
        # wsgidav reads an unread body whole before answering (one read() of Content-Length
        # bytes): a refused 5 GiB PUT would be 5 GiB of memory. Marked as begun, it is left
        # unread and the connection closed instead.
        environ["wsgidav.some_input_read"] = 1
        session = environ[KEY] = Session(self.view)
        environ[START_RESPONSE] = start_response
        try:
            body = self.app(environ, start_response)
        except BaseException:
            session.release()
            raise
        return _Closing(body, session.release)


def _refuse_path(environ: dict[str, Any]) -> str | None:
    """Why a request's path or Destination is refused before anything reads it; None if it is not."""
    raw = environ.get("REQUEST_URI", "").split("?", 1)[0]
    destination = urlsplit(environ.get("HTTP_DESTINATION", "")).path
    if any(_ENCODED.search(p) or _DOT_SEGMENT.search(unquote(p)) for p in (raw, destination)):
        return "the path holds a dot segment or an encoded slash"
    try:  # a WSGI path is Latin-1 text of the decoded bytes, which name nothing here unless they are UTF-8
        environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
    except UnicodeError:
        return "the path is not UTF-8"
    return None


def _guarded(start_response: Callable[..., Any]) -> Callable[..., Any]:
    """A start_response that adds the headers every answer of the share carries."""

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, *_EVERY_RESPONSE], exc_info)

    return start


def _closing_unread(environ: dict[str, Any], start_response: Callable[..., Any]) -> Callable[..., Any]:
    """A start_response that makes cheroot close a connection whose request body was not read.

    cheroot otherwise reads the rest of the body, in one read() of all of it,
    to keep the connection: a refused 5 GiB PUT would be 5 GiB of memory.
    It ignores an app's `Connection: close`, so its request object is told.
    """

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        has_body = chunked or (environ.get("CONTENT_LENGTH") or "0") not in ("0", "")
        if has_body and not environ.get("wsgidav.all_input_read"):
            request = getattr(getattr(start_response, "__self__", None), "req", None)
            if request is not None:
                request.close_connection = True
        return start_response(status, headers, exc_info)

    return start


def _refuse_body(environ: dict[str, Any]) -> tuple[str, str] | None:
    """A status and reason for a request body that is not read at all."""
    value = environ.get("CONTENT_LENGTH") or "0"
    if not value.isdigit():
        return "400 Bad Request", f"bad Content-Length {value!r}"
    if environ["REQUEST_METHOD"] != "PUT" and int(value) > MAX_XML_BODY:
        return "413 Content Too Large", f"request bodies other than PUT's are at most {MAX_XML_BODY} bytes"
    return None


class _Closing:
    """A response body that releases its session when the server closes it.

    Also when the iteration ends or the body is dropped: cheroot skips close()
    if sending the headers fails (a client gone before the first byte).
    """

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]):
        self.body = body
        self.done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.body
        finally:
            self.close()

    def close(self) -> None:
        done, self.done = self.done, None
        if done is None:
            return
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            done()


class Server:
    """cheroot serving the share; `stop` may be called from any thread."""

    def __init__(self, app: WSGIApp, host: str, port: int):
        self.httpd = HTTPServer((host, port), app)
        self.httpd.prepare()  # binds now: a port in use fails here, and port 0 gets a number
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        return int(self.httpd.bind_addr[1])

    def serve(self) -> None:
        """Serve until `stop`."""
        try:
            self.httpd.serve()
        finally:
            self._stopped.set()

    def stop(self) -> None:
        self.httpd.stop()
        self._stopped.wait(10)


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, or [IPv6]:PORT."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def serve(app: WSGIApp, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT (call from the main thread)."""
    server = Server(app, host, port)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker = threading.Thread(target=server.serve, name="cairn-dav", daemon=True)
    worker.start()
    log.info("WebDAV share at http://%s:%d/", host, server.port)
    try:
        while not stop.wait(1.0) and worker.is_alive():
            pass
    finally:
        log.info("stopping the WebDAV share")
        server.stop()  # from this thread: cheroot cannot stop from inside serve()
        worker.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
