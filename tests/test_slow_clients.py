"""Slow and greedy HTTP clients cannot take the appliance down: head deadline, threads per address, a bigger pool."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dav.guard import Guard, HTTPServer

from .served import served


def _app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@contextmanager
def _serving(guard: Guard) -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _app, guard=guard)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield int(server.bind_addr[1])
    finally:
        server.stop()
        thread.join(timeout=30)


def _get(port: int, path: str = "/", source: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    """A whole request from `source` (any 127/8 address is this machine); the status line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return s.recv(4096).split(b"\r\n", 1)[0]


def _slow(port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """Connections that send the start of a request line and then nothing more."""
    out = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
        s.sendall(b"GET / HTTP/1.1\r\nHo")
        out.append(s)
    return out


def test_one_address_holds_its_share_of_threads_and_heads_have_a_deadline() -> None:
    with _serving(Guard(per_address=4, head_deadline=2.0)) as port:
        slow = _slow(port, 4)
        time.sleep(0.5)  # each has a worker thread, reading its head
        assert _get(port) == b"HTTP/1.1 503 Service Unavailable"  # the fifth from that address
        assert _get(port, source="127.0.0.2") == b"HTTP/1.1 200 OK"  # another address is served
        start = time.monotonic()
        for s in slow:  # the head deadline shuts each down: the read ends (a 400, or nothing)
            while s.recv(4096):
                pass
        assert time.monotonic() - start < 15  # liveness: 2 s deadline, 1 s watchdog tick
        assert _get(port) == b"HTTP/1.1 200 OK"  # the address has its threads back
        for s in slow:
            s.close()


def test_slow_clients_do_not_take_the_appliance_down(tmp_path: Path) -> None:
    with served(tmp_path / "data", tmp_path / "serve.log") as server:
        port = int(server.url.rsplit(":", 1)[1])
        slow = _slow(port, 24)  # more than the old pool of 16 threads
        stop = threading.Event()

        def trickle() -> None:  # one byte each a second: no read ever times out
            while not stop.wait(1.0):
                for s in slow:  # (those over the address's share were sent a 503 and closed)
                    with contextlib.suppress(OSError):
                        s.sendall(b"s")

        trickling = threading.Thread(target=trickle, daemon=True)
        trickling.start()
        try:
            time.sleep(1.5)
            assert _get(port, "/healthz", source="127.0.0.2", timeout=15) == b"HTTP/1.1 200 OK"
        finally:
            stop.set()
            trickling.join()
            for s in slow:
                s.close()
