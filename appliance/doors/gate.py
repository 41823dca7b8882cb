"""The gate: a Unix socket in the run directory where the front doors' helpers (client.py) ask the appliance.

One JSON line per request, one per reply; an SSH session's request carries
its stdin/stdout/stderr (SCM_RIGHTS) and keeps the connection open while
rsync runs, so the relay's end is seen at once. Who may ask is checked on
the socket's peer: root (the rsync daemon's and Samba's hooks) for everything, the
`cairn` SSH user for key lookups and its own session. One thread per
connection; the handlers are the doors' (Handlers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)
MAX_REQUEST = 256 * 1024  # an rsync command line with many paths fits; anything longer is refused


class Handlers(Protocol):
    def keys(self, user: str, fingerprint: str) -> list[str]: ...
    def rsync(self, request: dict[str, Any], fds: list[int], closed: threading.Event) -> dict[str, Any]: ...
    def xfer(self, stage: str, env: dict[str, str]) -> dict[str, Any]: ...
    def smb(self, request: dict[str, Any]) -> dict[str, Any]: ...


class Gate:
    def __init__(self, path: Path, handlers: Handlers, ssh_uid: int | None):
        self.path = path
        self.handlers = handlers
        self.ssh_uid = ssh_uid  # the SSH user's uid: may ask for keys and run its own session
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o666)  # the SSH user connects; who may ask what is checked on the peer
        sock.listen(64)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="cairn-gate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
            self._sock.close()
        self.path.unlink(missing_ok=True)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._serve, args=(conn,), name="cairn-gate-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            uid = _peer_uid(conn)
            request, fds = _read_request(conn)
            if request.get("op") == "rsync":
                owned, fds = fds, []  # the session's handler closes them as soon as rsync has them
                reply = self._answer(uid, request, owned, conn)
            else:
                reply = self._answer(uid, request, fds, conn)
            conn.sendall((json.dumps(reply) + "\n").encode())
        except (OSError, ValueError) as e:
            log.warning("front door helper: %s", e)
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()

    def _answer(self, uid: int, request: dict[str, Any], fds: list[int], conn: socket.socket) -> dict[str, Any]:
        op = request.get("op")
        ssh_user = self.ssh_uid is not None and uid == self.ssh_uid
        if op == "keys" and (uid == 0 or ssh_user):
            return {"lines": self.handlers.keys(str(request.get("user")), str(request.get("fingerprint")))}
        if op == "rsync" and (uid == 0 or ssh_user) and len(fds) == 3:
            closed = threading.Event()  # set when the relay goes: its SSH session ended
            threading.Thread(target=_watch, args=(conn, closed), daemon=True).start()
            return self.handlers.rsync(request, fds, closed)
        if op in ("pre", "post") and uid == 0 and isinstance(request.get("env"), dict):
            return self.handlers.xfer(op, {str(k): str(v) for k, v in request["env"].items()})
        if op == "smb" and uid == 0:
            return self.handlers.smb(request)
        if op == "rsync":  # refused: the descriptors it brought are this thread's to close
            for fd in fds:
                os.close(fd)
        raise ValueError(f"refused request {op!r} from uid {uid}")


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST, 3)
    while not data.endswith(b"\n"):
        more = conn.recv(MAX_REQUEST)
        if not more or len(data) + len(more) > MAX_REQUEST:
            for fd in fds:
                os.close(fd)
            raise ValueError("a request is one JSON line")
        data += more
    request = json.loads(data)
    if not isinstance(request, dict):
        for fd in fds:
            os.close(fd)
        raise ValueError("a request is a JSON object")
    return request, list(fds)


def _watch(conn: socket.socket, closed: threading.Event) -> None:
    """Set `closed` once the relay hangs up (it never sends more than its request)."""
    try:
        while conn.recv(1, socket.MSG_PEEK):
            conn.recv(1)
    except OSError:
        pass
    closed.set()
