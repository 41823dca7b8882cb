"""A read-only NBD server for one image version: `qemu-img convert nbd://…` restores it, a VM can boot from it.

The fixed-newstyle handshake (NBD_OPT_GO, _INFO, _EXPORT_NAME, _LIST,
_ABORT) and simple replies to READ and DISC; writes are refused, as the
export is read-only. Each connection is served by its own thread; reads
go straight to the block map, so nothing is written out first.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import struct
import threading

from engine.errors import CairnError, CorruptBlob

from .disk import VersionReader

log = logging.getLogger(__name__)

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC, SIMPLE_REPLY_MAGIC = 0x25609513, 0x67446698
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP, REP_ERR_INVALID, REP_ERR_UNKNOWN = (1 << 31) + 1, (1 << 31) + 3, (1 << 31) + 6
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3
TX_HAS_FLAGS, TX_READ_ONLY, TX_CAN_MULTI_CONN = 1, 2, 1 << 8
CMD_READ, CMD_DISC = 0, 2
EPERM, EIO, EINVAL = 1, 5, 22
MAX_REQUEST = 32 << 20  # the largest read a client may ask for (advertised)

_OPTION = struct.Struct(">QII")
_OPT_REPLY = struct.Struct(">QIII")
_REQUEST = struct.Struct(">IHHQQI")
_REPLY = struct.Struct(">IIQ")


class Closed(Exception):
    """The client went away."""


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Closed
        buf += chunk
    return bytes(buf)


class Export:
    """One image version under an export name. Immutable; the reader is thread-safe."""

    def __init__(self, name: str, reader: VersionReader):
        self.name = name
        self.reader = reader

    def matches(self, name: bytes) -> bool:
        return name in (b"", self.name.encode())


class _Handler(socketserver.BaseRequestHandler):
    server: NbdServer

    def handle(self) -> None:
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(NBDMAGIC + struct.pack(">QH", IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
            (client_flags,) = struct.unpack(">I", _recv(sock, 4))
            if self._negotiate(sock, bool(client_flags & FLAG_NO_ZEROES)):
                self._transmit(sock)
        except (Closed, ConnectionError):
            pass

    def _reply(self, sock: socket.socket, option: int, kind: int, data: bytes = b"") -> None:
        sock.sendall(_OPT_REPLY.pack(OPT_REPLY_MAGIC, option, kind, len(data)) + data)

    def _negotiate(self, sock: socket.socket, no_zeroes: bool) -> bool:
        """The option haggling; True once the client moves on to transmission."""
        export = self.server.export
        size = export.reader.size
        while True:
            magic, option, length = _OPTION.unpack(_recv(sock, _OPTION.size))
            data = _recv(sock, length) if length else b""
            if magic != IHAVEOPT:
                return False
            if option == OPT_EXPORT_NAME:
                if not export.matches(data):
                    return False  # the protocol allows only hanging up here
                sock.sendall(struct.pack(">QH", size, self._flags()) + (b"" if no_zeroes else bytes(124)))
                return True
            if option == OPT_ABORT:
                self._reply(sock, option, REP_ACK)
                return False
            if option == OPT_LIST:
                name = export.name.encode()
                self._reply(sock, option, REP_SERVER, struct.pack(">I", len(name)) + name)
                self._reply(sock, option, REP_ACK)
            elif option in (OPT_INFO, OPT_GO):
                if len(data) < 6 or len(data) < 6 + struct.unpack(">I", data[:4])[0]:
                    self._reply(sock, option, REP_ERR_INVALID)
                    continue
                name = data[4 : 4 + struct.unpack(">I", data[:4])[0]]
                if not export.matches(name):
                    self._reply(sock, option, REP_ERR_UNKNOWN, b"no such export")
                    continue
                self._reply(sock, option, REP_INFO, struct.pack(">HQH", INFO_EXPORT, size, self._flags()))
                preferred = min(export.reader.block_size, MAX_REQUEST)
                self._reply(sock, option, REP_INFO, struct.pack(">HIII", INFO_BLOCK_SIZE, 1, preferred, MAX_REQUEST))
                self._reply(sock, option, REP_ACK)
                if option == OPT_GO:
                    return True
            else:
                self._reply(sock, option, REP_ERR_UNSUP)

    @staticmethod
    def _flags() -> int:
        return TX_HAS_FLAGS | TX_READ_ONLY | TX_CAN_MULTI_CONN

    def _transmit(self, sock: socket.socket) -> None:
        reader = self.server.export.reader
        while True:
            magic, _flags, kind, cookie, offset, length = _REQUEST.unpack(_recv(sock, _REQUEST.size))
            if magic != REQUEST_MAGIC:
                return
            if kind == CMD_DISC:
                return
            if kind != CMD_READ:
                if kind == 1:  # a write carries its data: read it before refusing
                    _recv(sock, length)
                sock.sendall(_REPLY.pack(SIMPLE_REPLY_MAGIC, EPERM if kind == 1 else EINVAL, cookie))
                continue
            if length > MAX_REQUEST or offset + length > reader.size:
                sock.sendall(_REPLY.pack(SIMPLE_REPLY_MAGIC, EINVAL, cookie))
                continue
            try:
                data = reader.read(offset, length)
            except (CorruptBlob, CairnError) as e:
                log.error("NBD read at %d failed: %s", offset, e)
                sock.sendall(_REPLY.pack(SIMPLE_REPLY_MAGIC, EIO, cookie))
                continue
            sock.sendall(_REPLY.pack(SIMPLE_REPLY_MAGIC, 0, cookie) + data)


class NbdServer(socketserver.ThreadingTCPServer):
    """Serves one export until `shutdown`. Connection threads are daemons."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], export: Export):
        self.export = export
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="cairn-nbd", daemon=True)
        thread.start()
        return thread
