"""A backend on a local directory: temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from .. import private
from ..errors import BackendError, NoSpace, ObjectNotFound
from .backend import Properties, check_key


class LocalBackend:
    """Thread-safe: every call works on its own file descriptors."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    @property
    def properties(self) -> Properties:
        return Properties(connections=2, consistent_listing=True, local=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes | memoryview) -> None:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            private.make_dirs(path.parent)  # 0700, as the files are 0600: a pool's packs are nobody else's
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as e:
            _unlink_quietly(tmp)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"pool {self.root} is full: {e.strerror}") from e
            raise BackendError(f"cannot write {key} in {self.root}: {e.strerror}") from e

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            # os.open and pread, not open(): a buffered file costs an ioctl, an lseek and an fcntl
            # more per read, and restores read one blob at a time.
            fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if length is None:
                    length = max(0, os.fstat(fd).st_size - offset)
                return _pread(fd, length, offset)
            finally:
                os.close(fd)
        except FileNotFoundError as e:
            raise ObjectNotFound(f"no object {key} in {self.root}") from e
        except OSError as e:
            raise BackendError(f"cannot read {key} in {self.root}: {e.strerror}") from e

    def stat(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        _unlink_quietly(self._path(key))

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        # Walk only the directory that can hold the prefix.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    yield key, os.stat(os.path.join(dirpath, name)).st_size

    def describe(self) -> str:
        return f"local:{self.root}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _pread(fd: int, length: int, offset: int) -> bytes:
    """Up to `length` bytes at `offset` (fewer at the end of the file)."""
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
