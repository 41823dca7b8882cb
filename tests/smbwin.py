"""Windows file calls over SMB2 on an open handle: the requests smbprotocol's `Open` has no method for.

Times are FILETIME ints (100 ns since 1601-01-01 UTC) parsed from the raw replies: smbprotocol's
`DateTimeField` goes through `datetime` and drops the last decimal, so a time set and read back
through it would not compare equal.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smbprotocol.create_contexts import SMB2CreateContextRequest, SMB2CreateTimewarpToken
from smbprotocol.exceptions import NoMoreFiles
from smbprotocol.file_info import FileAttributes, FileInformationClass, InfoType
from smbprotocol.ioctl import IOCTLFlags, SMB2IOCTLRequest, SMB2IOCTLResponse
from smbprotocol.open import (
    CreateOptions,
    ImpersonationLevel,
    Open,
    ShareAccess,
    SMB2QueryDirectoryRequest,
    SMB2QueryDirectoryResponse,
    SMB2QueryInfoRequest,
    SMB2QueryInfoResponse,
    SMB2SetInfoRequest,
    SMB2SetInfoResponse,
)
from smbprotocol.tree import TreeConnect

EPOCH_FILETIME = 116_444_736_000_000_000  # 1970-01-01 as a FILETIME
SHARE_ALL = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
ARCHIVE = FileAttributes.FILE_ATTRIBUTE_ARCHIVE
NORMAL = FileAttributes.FILE_ATTRIBUTE_NORMAL
READONLY = FileAttributes.FILE_ATTRIBUTE_READONLY
HIDDEN = FileAttributes.FILE_ATTRIBUTE_HIDDEN
SYSTEM = FileAttributes.FILE_ATTRIBUTE_SYSTEM
DIRECTORY = FileAttributes.FILE_ATTRIBUTE_DIRECTORY
CREATE_FILE = CreateOptions.FILE_NON_DIRECTORY_FILE
CREATE_DIR = CreateOptions.FILE_DIRECTORY_FILE
SEQUENTIAL = CreateOptions.FILE_SEQUENTIAL_ONLY
_NETWORK_OPEN = struct.Struct("<qqqqqqI4x")  # FILE_NETWORK_OPEN_INFORMATION, 56 bytes
_BASIC = struct.Struct("<qqqqI4x")  # FILE_BASIC_INFORMATION, 40 bytes
_ID_BOTH_DIR = struct.Struct("<IIqqqqqqIII")  # FILE_ID_BOTH_DIR_INFORMATION up to EaSize; the name is at 104


@dataclass(frozen=True)
class WinInfo:
    """What Windows knows of a file: FILE_ATTRIBUTE_* bits, FILETIME ints, and the size in bytes."""

    attributes: int
    creation_time: int
    last_access_time: int
    last_write_time: int
    size: int

    @property
    def is_dir(self) -> bool:
        return bool(self.attributes & DIRECTORY)


def filetime_from_ns(ns: int) -> int:
    """A POSIX time in nanoseconds (`st_mtime_ns`) as a FILETIME."""
    return EPOCH_FILETIME + ns // 100


def filetime_to_ns(filetime: int) -> int:
    return (filetime - EPOCH_FILETIME) * 100


def token_time(token: str) -> datetime:
    """The UTC instant an `@GMT-YYYY.MM.DD-HH.MM.SS` Previous Versions token names."""
    return datetime.strptime(token, "@GMT-%Y.%m.%d-%H.%M.%S").replace(tzinfo=UTC)


def open_path(
    tree: TreeConnect,
    path: str,
    access: int,
    disposition: int,
    options: int = 0,
    share: int = SHARE_ALL,
    attributes: int = 0,
    snapshot: str | None = None,
) -> Open:
    """CREATE `path` (backslashes, relative to the share); `snapshot` adds the timewarp context ("TWrp")."""
    contexts = []
    if snapshot is not None:
        token = SMB2CreateTimewarpToken()
        token["timestamp"] = token_time(snapshot)  # whole seconds: the datetime round trip loses nothing
        context = SMB2CreateContextRequest()
        context["buffer_name"] = token.NAME
        context["buffer_data"] = token
        contexts.append(context)
    handle = Open(tree, path)
    handle.create(ImpersonationLevel.Impersonation, access, attributes, share, disposition, options, contexts or None)
    return handle


def _call(handle: Open, request: Any, response: Any) -> Any:
    """Send one request on the handle's tree, wait, and unpack the reply into `response`."""
    tree = handle.tree_connect
    sent = handle.connection.send(request, tree.session.session_id, tree.tree_connect_id)
    response.unpack(handle.connection.receive(sent)["data"].get_value())
    return response


def query_info(handle: Open, info_class: int, size: int) -> bytes:
    request = SMB2QueryInfoRequest()
    request["info_type"] = InfoType.SMB2_0_INFO_FILE
    request["file_info_class"] = info_class
    request["output_buffer_length"] = size
    request["file_id"] = handle.file_id
    reply = _call(handle, request, SMB2QueryInfoResponse())
    return bytes(reply["buffer"].get_value())


def set_info(handle: Open, info_class: int, buffer: bytes) -> None:
    request = SMB2SetInfoRequest()
    request["info_type"] = InfoType.SMB2_0_INFO_FILE
    request["file_info_class"] = info_class
    request["file_id"] = handle.file_id
    request["buffer"] = buffer
    _call(handle, request, SMB2SetInfoResponse())


def query_win_info(handle: Open) -> WinInfo:
    """FileNetworkOpenInformation: times, size and attributes in one reply."""
    raw = query_info(handle, FileInformationClass.FILE_NETWORK_OPEN_INFORMATION, _NETWORK_OPEN.size)
    created, accessed, written, _changed, _allocated, size, attributes = _NETWORK_OPEN.unpack(raw)
    return WinInfo(attributes, created, accessed, written, size)


def set_basic(handle: Open, attributes: int = 0, created: int = 0, accessed: int = 0, written: int = 0) -> None:
    """FileBasicInformation; 0 leaves a field as it is (attributes: pass NORMAL to clear them all)."""
    buffer = _BASIC.pack(created, accessed, written, 0, attributes)
    set_info(handle, FileInformationClass.FILE_BASIC_INFORMATION, buffer)


def set_end_of_file(handle: Open, size: int) -> None:
    set_info(handle, FileInformationClass.FILE_END_OF_FILE_INFORMATION, struct.pack("<q", size))


def set_delete_pending(handle: Open) -> None:
    """FileDispositionInformation: the file goes when the handle closes (how DeleteFile works)."""
    set_info(handle, FileInformationClass.FILE_DISPOSITION_INFORMATION, b"\x01")


def list_dir(handle: Open) -> Iterator[tuple[str, WinInfo]]:
    """The entries of an open directory (FileIdBothDirectoryInformation, as FindFirstFile asks), no `.`/`..`."""
    flags = 0x01  # SMB2_RESTART_SCANS on the first call
    while True:
        request = SMB2QueryDirectoryRequest()
        request["file_information_class"] = FileInformationClass.FILE_ID_BOTH_DIRECTORY_INFORMATION
        request["flags"] = flags
        request["file_id"] = handle.file_id
        request["output_buffer_length"] = 65536
        request["buffer"] = "*".encode("utf-16-le")
        try:
            reply = _call(handle, request, SMB2QueryDirectoryResponse())
        except NoMoreFiles:
            return
        flags = 0
        yield from _dir_entries(bytes(reply["buffer"].get_value()))


def _dir_entries(buffer: bytes) -> Iterator[tuple[str, WinInfo]]:
    offset = 0
    while True:
        fields = _ID_BOTH_DIR.unpack_from(buffer, offset)
        following, _index, created, accessed, written, _changed, size, _alloc, attributes, name_len, _ea = fields
        name = buffer[offset + 104 : offset + 104 + name_len].decode("utf-16-le")
        if name not in (".", ".."):
            yield name, WinInfo(attributes, created, accessed, written, size)
        if not following:
            return
        offset += following


def ioctl(handle: Open, code: int, max_output: int) -> bytes:
    """An FSCTL on the handle; the reply's output buffer."""
    request = SMB2IOCTLRequest()
    request["ctl_code"] = code
    request["file_id"] = handle.file_id
    request["max_output_response"] = max_output
    request["flags"] = IOCTLFlags.SMB2_0_IOCTL_IS_FSCTL
    request["buffer"] = b""
    reply = _call(handle, request, SMB2IOCTLResponse())
    return bytes(reply["buffer"].get_value())


def pipelined(handle: Open, requests: Iterable[tuple[Any, Callable[..., Any]]], depth: int) -> Iterator[Any]:
    """Keep up to `depth` reads or writes in flight (as Windows does) and yield their results in order.

    Each request asks for twice the credits it spends until the server's window covers `depth`
    of them: smbprotocol otherwise asks for exactly what it spends and the window never grows.
    """
    connection = handle.connection
    tree = handle.tree_connect
    in_flight: list[tuple[Any, Callable[..., Any]]] = []
    for message, receive in requests:
        charge = max(1, (max(message["length"].get_value(), 1) - 1) // 65536 + 1)
        while in_flight and _credits(handle) < charge:
            sent, done = in_flight.pop(0)
            yield done(sent)
        wanted = charge * 2 if _credits(handle) < charge * depth else charge
        sent = connection.send(message, tree.session.session_id, tree.tree_connect_id, credit_request=wanted)
        in_flight.append((sent, receive))
        if len(in_flight) >= depth:
            sent, done = in_flight.pop(0)
            yield done(sent)
    for sent, done in in_flight:
        yield done(sent)


def _credits(handle: Open) -> int:
    window = handle.connection.sequence_window
    return int(window["high"] - window["low"])
