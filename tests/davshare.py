"""The WebDAV share, started for real on a free loopback port, and a small HTTP client for it."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cheroot import wsgi

from dav.app import Server, make_app
from dav.auth import hash_password
from dav.scope import ScopeOf
from engine.deployment import Deployment
from engine.mount import MountView

USER, PASSWORD = "alice", "correct horse"
_HASH = hash_password(PASSWORD)  # scrypt costs ~50 ms: once per session


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Share:
    port: int
    dep: Deployment
    view: MountView

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, auth: bool = True
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            sent = dict(headers or {})
            if auth:
                sent.setdefault("Authorization", basic(USER, PASSWORD))
            conn.request(method, path, body=body, headers=sent)
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def put_streamed(self, path: str, mib: int) -> int:
        """PUT `mib` MiB of random bytes with no length (chunked), as a client streaming a file; the status.

        A server that fails part-way answers and hangs up before the end: that is not an error here.
        """

        def body() -> Iterator[bytes]:
            for _ in range(mib):
                yield os.urandom(1 << 20)

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Transfer-Encoding": "chunked", "Authorization": basic(USER, PASSWORD)}
        try:
            with contextlib.suppress(BrokenPipeError):
                conn.request("PUT", path, body=body(), encode_chunked=True, headers=headers)
            return conn.getresponse().status
        finally:
            conn.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@contextmanager
def share(
    data_dir: Path, *, anonymous: bool = False, sources: tuple[str, ...] = ("h1",), mount_path: str = "",
    scope: ScopeOf | None = None,
) -> Iterator[Share]:  # fmt: skip
    """A deployment on `data_dir` served over WebDAV until the block ends, at `mount_path` if given,
    limited to what `scope` (dav/scope.py) allows if given."""
    dep = Deployment.open(data_dir)
    try:
        known = {s.name for s in dep.list_sources()}
        for name in sources:
            if name not in known:
                dep.add_source(name)
        dep.start_flusher()  # as `cairn dav` does
        view = MountView(dep)
        app = make_app(view, {USER: _HASH}, anonymous=anonymous, mount_path=mount_path, scope=scope)
        if mount_path:  # as the appliance will: one port, the share under a path
            app = wsgi.PathInfoDispatcher({mount_path: app})
        server = Server(app, "127.0.0.1", 0)
        worker = threading.Thread(target=server.serve, daemon=True)
        worker.start()
        try:
            yield Share(server.port, dep, view)
        finally:
            server.stop()
            worker.join()
    finally:
        dep.close()
