"""A small robocopy over smbprotocol: what `robocopy SRC \\\\server\\share /MIR /COPY:DAT /DCOPY:T /R:1 /W:1`
sends to an SMB share, so tests and benchmarks can drive a Samba share as a Windows client would.

Remote paths use `/` or `\\`, relative to the share root. Times are FILETIME ints (see `smbwin`).
Errors are smbprotocol's exceptions (`SMBResponseException` subclasses carrying the NT status);
a failed file is tried once more after a second, as /R:1 /W:1 does, and then the error is raised.
"""

from __future__ import annotations

import os
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TypeVar

from smbprotocol.connection import Connection
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.ioctl import CtlCode
from smbprotocol.open import CreateDisposition, DirectoryAccessMask, FilePipePrinterAccessMask, Open
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from . import smbwin
from .smbwin import WinInfo, filetime_from_ns, filetime_to_ns

__all__ = [
    "MirrorStats",
    "Share",
    "WinInfo",
    "info",
    "mirror",
    "open_locked",
    "previous_versions",
    "restore",
    "set_info",
]

CHUNK = 1 << 20  # Windows' largest SMB2 write and read
# Reads or writes in flight, as Windows keeps several. On loopback the client's CPU is the limit
# (smbprotocol packs and signs in Python): 1, 4 and 8 all copy about 120 MiB/s.
DEPTH = 4
_F = FilePipePrinterAccessMask
_WRITE_FILE = _F.GENERIC_WRITE | _F.DELETE | _F.FILE_READ_ATTRIBUTES | _F.FILE_WRITE_ATTRIBUTES | _F.SYNCHRONIZE
_T = TypeVar("_T")


class Share:
    """One SMB 3 connection, session and tree connect to `\\\\host\\share`, signed; `close()` ends the TCP
    connection, so the server's per-connection process ends too. Not shared between threads."""

    def __init__(self, host: str, port: int, share: str, user: str, password: str) -> None:
        self.connection = Connection(uuid.uuid4(), host, port, require_signing=True)
        self.connection.connect(timeout=10)
        try:
            # Signing only, as Windows does unless the share demands encryption.
            self.session = Session(self.connection, user, password, require_encryption=False)
            self.session.connect()
            self.tree = TreeConnect(self.session, rf"\\{host}\{share}")
            self.tree.connect()
        except BaseException:
            self.connection.disconnect(close=False)
            raise
        self.chunk = min(CHUNK, self.connection.max_write_size, self.connection.max_read_size)

    def open(
        self,
        path: str,
        access: int,
        disposition: int,
        options: int = 0,
        share: int = smbwin.SHARE_ALL,
        attributes: int = 0,
        snapshot: str | None = None,
    ) -> Open:
        """CREATE a handle on `path`; the caller closes it."""
        return smbwin.open_path(self.tree, _smb(path), access, disposition, options, share, attributes, snapshot)

    def close(self) -> None:
        self.connection.disconnect(close=True)

    def __enter__(self) -> Share:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@dataclass
class MirrorStats:
    """What one `mirror` did, in robocopy's columns."""

    dirs_created: int = 0
    files_copied: int = 0
    bytes_copied: int = 0
    files_skipped: int = 0
    extras_deleted: int = 0
    failures_retried: int = 0
    copied: list[str] = field(default_factory=list)


def info(share: Share, path: str, snapshot: str | None = None) -> WinInfo:
    """Attributes, times and size of a remote file or directory (optionally as it was at `snapshot`)."""
    access = _F.FILE_READ_ATTRIBUTES | _F.SYNCHRONIZE
    with _closing(share.open(path, access, CreateDisposition.FILE_OPEN, snapshot=snapshot)) as handle:
        return smbwin.query_win_info(handle)


def set_info(
    share: Share,
    path: str,
    attributes: int | None = None,
    creation_time: int | None = None,
    last_write_time: int | None = None,
    last_access_time: int | None = None,
) -> None:
    """SetFileAttributes/SetFileTime: change only what is given (FILETIME ints; attributes 0 means NORMAL)."""
    access = _F.FILE_WRITE_ATTRIBUTES | _F.SYNCHRONIZE
    bits = 0 if attributes is None else attributes or smbwin.NORMAL  # 0 in the request means "unchanged"
    with _closing(share.open(path, access, CreateDisposition.FILE_OPEN)) as handle:
        smbwin.set_basic(handle, bits, creation_time or 0, last_access_time or 0, last_write_time or 0)


def previous_versions(share: Share, path: str = "") -> list[str]:
    """The `@GMT-…` tokens the server offers for a directory (FSCTL_SRV_ENUMERATE_SNAPSHOTS).

    Like Windows' Previous Versions tab: ask with room for the 16-byte header only to learn the
    array's size, then again with room for all of it.
    """
    access = DirectoryAccessMask.FILE_READ_ATTRIBUTES | DirectoryAccessMask.FILE_LIST_DIRECTORY
    with _closing(share.open(path, access | _F.SYNCHRONIZE, CreateDisposition.FILE_OPEN, smbwin.CREATE_DIR)) as h:
        code = CtlCode.FSCTL_SRV_ENUMERATE_SNAPSHOTS
        count, _returned, size = struct.unpack_from("<III", smbwin.ioctl(h, code, 16))
        if not count:
            return []
        reply = smbwin.ioctl(h, code, 12 + size)
    _count, returned, size = struct.unpack_from("<III", reply)
    tokens = reply[12 : 12 + size].decode("utf-16-le").split("\0")
    return [token for token in tokens if token][:returned]


@contextmanager
def open_locked(share: Share, path: str) -> Iterator[Open]:
    """Hold a remote file open for reading and writing with no sharing, as a program that locks it does."""
    access = _F.GENERIC_READ | _F.GENERIC_WRITE
    with _closing(share.open(path, access, CreateDisposition.FILE_OPEN, smbwin.CREATE_FILE, share=0)) as handle:
        yield handle


def mirror(
    share: Share,
    local_dir: str | os.PathLike[str],
    remote_dir: str = "",
    attributes: Mapping[str, int] | None = None,
    creation_times: Mapping[str, int] | None = None,
    wait: float = 1.0,
) -> MirrorStats:
    """`robocopy local_dir \\\\server\\share\\remote_dir /MIR /COPY:DAT /DCOPY:T /R:1 /W:1`.

    `attributes` and `creation_times` are keyed by the path relative to `local_dir` with `/`
    (Linux has neither): files default to ARCHIVE, creation times to the local mtime.
    """
    run = _Mirror(share, attributes or {}, creation_times or {}, wait)
    run.directory(Path(local_dir), "", _smb(remote_dir), exists=None)
    return run.stats


class _Mirror:
    """One mirror run: walks a local directory against its remote twin, depth first."""

    def __init__(self, share: Share, attributes: Mapping[str, int], created: Mapping[str, int], wait: float) -> None:
        self.share, self.attributes, self.created, self.wait = share, attributes, created, wait
        self.stats = MirrorStats()

    def directory(self, local: Path, rel: str, remote: str, exists: bool | None) -> None:
        """Mirror `local` into `remote` (`exists` None: not known), then stamp `remote` with `local`'s
        times (/DCOPY:T: after its contents, whose changes would move its last-write time)."""
        listing = _listing(self.share, remote) if self._ensure_dir(remote, exists) else {}
        entries = {entry.name.casefold(): entry for entry in sorted(os.scandir(local), key=lambda e: e.name)}
        for key, (name, extra) in list(listing.items()):
            if key not in entries or entries[key].is_dir() != extra.is_dir:
                self._retry(partial(_delete, self.share, _join(remote, name), extra))
                self.stats.extras_deleted += 1
                del listing[key]
        for key, entry in entries.items():
            child_rel, child_remote = rel + entry.name, _join(remote, entry.name)
            have = listing[key][1] if key in listing else None
            if entry.is_dir():
                self.directory(Path(entry.path), child_rel + "/", child_remote, have is not None)
            elif have is not None and _same(entry.stat(), have):
                self.stats.files_skipped += 1
            else:
                self._retry(partial(self._copy, Path(entry.path), child_rel, child_remote, have))
        st = local.stat()
        created = self.created.get(rel.rstrip("/"), filetime_from_ns(st.st_mtime_ns))
        stamp = (created, filetime_from_ns(st.st_atime_ns), filetime_from_ns(st.st_mtime_ns))
        access = _F.FILE_WRITE_ATTRIBUTES | _F.SYNCHRONIZE
        with _closing(self.share.open(remote, access, CreateDisposition.FILE_OPEN, smbwin.CREATE_DIR)) as handle:
            smbwin.set_basic(handle, 0, *stamp)

    def _ensure_dir(self, remote: str, exists: bool | None) -> bool:
        """Create `remote` unless known to exist; True if it was there (so its listing is worth reading)."""
        if exists:
            return True
        access = DirectoryAccessMask.FILE_READ_ATTRIBUTES | _F.SYNCHRONIZE
        disposition = CreateDisposition.FILE_CREATE if exists is False else CreateDisposition.FILE_OPEN_IF
        with _closing(self.share.open(remote, access, disposition, smbwin.CREATE_DIR)) as handle:
            created = handle.create_action == 2  # FILE_CREATED
        self.stats.dirs_created += created
        return not created

    def _copy(self, local: Path, rel: str, remote: str, have: WinInfo | None) -> None:
        """CopyFileEx then robocopy's stamp: clear a read-only/hidden/system target, create or overwrite,
        size it, write 1 MiB at a time, then set times and attributes before the close."""
        if have is not None and have.attributes & (smbwin.READONLY | smbwin.HIDDEN | smbwin.SYSTEM):
            set_info(self.share, remote, attributes=smbwin.NORMAL)
        st = local.stat()
        disposition = CreateDisposition.FILE_OVERWRITE_IF
        options = smbwin.CREATE_FILE | smbwin.SEQUENTIAL
        with (
            local.open("rb") as source,
            _closing(self.share.open(remote, _WRITE_FILE, disposition, options, attributes=smbwin.ARCHIVE)) as handle,
        ):
            smbwin.set_end_of_file(handle, st.st_size)
            written = sum(smbwin.pipelined(handle, _writes(handle, source, self.share.chunk), DEPTH))
            if written != st.st_size:
                raise OSError(f"{local}: wrote {written} of {st.st_size} bytes (the file changed while copied)")
            created = self.created.get(rel, filetime_from_ns(st.st_mtime_ns))
            attributes = self.attributes.get(rel, smbwin.ARCHIVE) or smbwin.NORMAL
            smbwin.set_basic(
                handle, attributes, created, filetime_from_ns(st.st_atime_ns), filetime_from_ns(st.st_mtime_ns)
            )
        self.stats.files_copied += 1
        self.stats.bytes_copied += st.st_size
        self.stats.copied.append(rel)

    def _retry(self, step: Callable[[], _T]) -> _T:
        """/R:1 /W:1: one more try after `wait` seconds; the second failure is raised."""
        try:
            return step()
        except SMBResponseException:
            self.stats.failures_retried += 1
            time.sleep(self.wait)
            return step()


def restore(
    share: Share, remote_dir: str, local_dir: str | os.PathLike[str], snapshot: str | None = None
) -> dict[str, WinInfo]:
    """Copy a remote tree (as it was at `snapshot`, an `@GMT-…` token, if given) into `local_dir`.

    Local files get the remote last-write time as mtime. Returns the Windows info of every file
    and directory by path relative to `remote_dir` with `/`.
    """
    found: dict[str, WinInfo] = {}
    pending = [("", _smb(remote_dir), Path(local_dir))]
    while pending:
        rel, remote, local = pending.pop()
        local.mkdir(parents=True, exist_ok=True)
        for name, have in _listing(share, remote, snapshot).values():
            found[rel + name] = have
            if have.is_dir:
                pending.append((f"{rel}{name}/", _join(remote, name), local / name))
                continue
            _fetch(share, _join(remote, name), local / name, have.size, snapshot)
            mtime = filetime_to_ns(have.last_write_time)
            os.utime(local / name, ns=(filetime_to_ns(have.last_access_time), mtime))
    return found


def _fetch(share: Share, remote: str, local: Path, size: int, snapshot: str | None) -> None:
    access = _F.GENERIC_READ | _F.SYNCHRONIZE
    options = smbwin.CREATE_FILE | smbwin.SEQUENTIAL
    with (
        local.open("wb") as sink,
        _closing(share.open(remote, access, CreateDisposition.FILE_OPEN, options, snapshot=snapshot)) as handle,
    ):
        reads = (
            handle.read(offset, min(share.chunk, size - offset), send=False) for offset in range(0, size, share.chunk)
        )
        for data in smbwin.pipelined(handle, reads, DEPTH):
            sink.write(data)


def _writes(handle: Open, source: BinaryIO, chunk: int) -> Iterator[tuple[object, Callable[..., int]]]:
    offset = 0
    while data := source.read(chunk):
        yield handle.write(data, offset, send=False)
        offset += len(data)


def _listing(share: Share, remote: str, snapshot: str | None = None) -> dict[str, tuple[str, WinInfo]]:
    """A remote directory's entries by case-folded name, as Windows matches them."""
    access = DirectoryAccessMask.FILE_LIST_DIRECTORY | DirectoryAccessMask.FILE_READ_ATTRIBUTES | _F.SYNCHRONIZE
    disposition = CreateDisposition.FILE_OPEN
    with _closing(share.open(remote, access, disposition, smbwin.CREATE_DIR, snapshot=snapshot)) as handle:
        return {name.casefold(): (name, have) for name, have in smbwin.list_dir(handle)}


def _delete(share: Share, remote: str, have: WinInfo) -> None:
    """An extra: a read-only one is made writable first (as robocopy does), a directory emptied first."""
    if have.is_dir:
        for name, child in _listing(share, remote).values():
            _delete(share, _join(remote, name), child)
    if have.attributes & smbwin.READONLY:
        set_info(share, remote, attributes=have.attributes & ~smbwin.READONLY & ~smbwin.DIRECTORY)
    options = smbwin.CREATE_DIR if have.is_dir else smbwin.CREATE_FILE
    access = _F.DELETE | _F.FILE_READ_ATTRIBUTES | _F.SYNCHRONIZE
    with _closing(share.open(remote, access, CreateDisposition.FILE_OPEN, options)) as handle:
        smbwin.set_delete_pending(handle)


def _same(st: os.stat_result, have: WinInfo) -> bool:
    """Robocopy's rule: same size and same last-write time means the file is already there."""
    return st.st_size == have.size and filetime_from_ns(st.st_mtime_ns) == have.last_write_time


@contextmanager
def _closing(handle: Open) -> Iterator[Open]:
    try:
        yield handle
    finally:
        handle.close()


def _smb(path: str) -> str:
    return path.replace("/", "\\").strip("\\")


def _join(remote: str, name: str) -> str:
    return f"{remote}\\{name}" if remote else name
