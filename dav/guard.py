"""The HTTP server of the web UI, the API and the share: cheroot, guarded against slow and greedy clients.

cheroot gives a connection a worker thread from the first byte of a request
until its response is sent, with a timeout per read only: a client sending
one byte every few seconds keeps its thread for ever, and sixteen such
clients took every thread of the old pool of 16. Three bounds close that:
the request line and headers must arrive within HEAD_DEADLINE seconds (a
watchdog shuts the socket down), one client address holds at most
PER_ADDRESS threads at once (the next gets a 503), and the pool is larger.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi

THREADS = 64  # a thread is ~100 KiB of stack; rclone uses up to 12 connections, browsers 6 per host
PER_ADDRESS = 16  # of THREADS: one address (or one NAT) can never take more than a quarter
HEAD_DEADLINE = 20.0  # seconds for request line + headers; a few hundred bytes take far less on any link
READ_TIMEOUT = 30  # seconds cheroot waits for each read of a body: uploads from slow links keep going

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Guard:
    """Thread-safe: `_lock` guards `_held` (threads per address) and `_heads` (deadlines of requests' heads)."""

    def __init__(self, per_address: int = PER_ADDRESS, head_deadline: float = HEAD_DEADLINE):
        self.per_address = per_address
        self.head_deadline = head_deadline
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()
        self._heads: dict[int, tuple[socket.socket, float]] = {}
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="cairn-http-guard", daemon=True)

    def start(self) -> None:
        if not self._watchdog.is_alive():
            self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()

    def enter(self, address: str) -> bool:
        """Take a thread for `address`, or False if it already holds its share."""
        with self._lock:
            if self._held[address] >= self.per_address:
                return False
            self._held[address] += 1
            return True

    def leave(self, address: str) -> None:
        with self._lock:
            self._held[address] -= 1
            if self._held[address] <= 0:
                del self._held[address]

    def head_started(self, sock: socket.socket) -> None:
        with self._lock:
            self._heads[id(sock)] = (sock, time.monotonic() + self.head_deadline)

    def head_done(self, sock: socket.socket) -> None:
        with self._lock:
            self._heads.pop(id(sock), None)

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic()
            with self._lock:
                late = [s for key, (s, deadline) in self._heads.items() if deadline < now]
                for s in late:
                    self._heads.pop(id(s), None)
            for s in late:
                with contextlib.suppress(OSError):  # the worker's blocked read returns, cheroot closes it
                    s.shutdown(socket.SHUT_RDWR)


class _Request(cheroot_server.HTTPRequest):
    def parse_request(self) -> None:
        guard: Guard = self.server.guard
        sock = self.conn.socket
        guard.head_started(sock)
        try:
            super().parse_request()
        finally:
            guard.head_done(sock)


class _Connection(cheroot_server.HTTPConnection):
    RequestHandlerClass = _Request

    def communicate(self) -> bool:
        guard: Guard = self.server.guard
        address = str(self.remote_addr or "")
        if not guard.enter(address):
            req = _Request(self.server, self)
            req.simple_response("503 Service Unavailable", "too many requests at once from this address")
            return False
        try:
            return bool(super().communicate())  # type: ignore[no-untyped-call]
        finally:
            guard.leave(address)


class HTTPServer(wsgi.Server):
    """cheroot's WSGI server with the guard's bounds; the guard's watchdog runs from `prepare()` to `stop()`."""

    ConnectionClass = _Connection

    def __init__(self, bind: tuple[str, int], app: WSGIApp, *, guard: Guard | None = None,
                 server_name: str = "cairn"):  # fmt: skip
        super().__init__(bind, app, numthreads=THREADS, server_name=server_name, timeout=READ_TIMEOUT)
        self.guard = guard or Guard()

    def prepare(self) -> None:
        super().prepare()
        self.guard.start()

    def stop(self) -> None:
        self.guard.stop()
        super().stop()
