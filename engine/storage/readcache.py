"""The read cache: whole packs on local disk, least recently used out first, below a size.

A read of any range of a pack that is not cached fetches the whole pack in
one GET (a restore reads most of each pack anyway, and one 16 MiB GET costs
less than the dozens of ranged GETs for its blobs), keeps it if its bytes
hash to its name, and serves the range. Only keys under `packs/` are
cached: packs are immutable and named by the BLAKE3 of their bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import blake3

from .. import private
from .backend import Backend, check_key
from .filter import Filter

log = logging.getLogger(__name__)

PACKS = "packs/"


class ReadCache(Filter):
    """Thread-safe: `_lock` guards `_entries` (key -> size, least recently used first) and `_bytes`.

    Downloads and file I/O run outside the lock; two readers missing the same
    pack both fetch it, and the second rename wins harmlessly.
    """

    def __init__(self, inner: Backend, directory: str | os.PathLike[str], max_bytes: int):
        super().__init__(inner)
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._load()

    def _load(self) -> None:
        """Index what a previous process left, oldest first; drop its unfinished downloads."""
        private.make_dirs(self.directory)
        found = []
        for path in self.directory.rglob("*"):
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
            elif path.is_file():
                st = path.stat()
                found.append((st.st_mtime, path.relative_to(self.directory).as_posix(), st.st_size))
        for _, key, size in sorted(found):
            self._entries[key] = size
            self._bytes += size
        self._evict()

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if not key.startswith(PACKS):
            return self.inner.get(key, offset, length)
        cached = self._read(key, offset, length)
        if cached is not None:
            return cached
        whole = self.inner.get(key)
        self._keep(key, whole)
        return whole[offset:] if length is None else whole[offset : offset + length]

    def _read(self, key: str, offset: int, length: int | None) -> bytes | None:
        with self._lock:
            if key not in self._entries:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
        try:
            with open(self.directory / check_key(key), "rb") as f:
                f.seek(offset)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError:  # evicted since the lookup
            return None

    def _keep(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes or blake3.blake3(data).hexdigest() != key.rsplit("/", 1)[-1]:
            return  # too big, or damaged: the blob check above reports it; never cache it
        path = self.directory / check_key(key)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            private.make_dirs(path.parent)
            private.write_file(tmp, data)  # 0600: packs of a pool that is not encrypted are plain data
            tmp.replace(path)
        except OSError as e:  # a cache that cannot write only costs time
            log.warning("cannot cache %s in %s: %s", key, self.directory, e)
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            if key not in self._entries:
                self._entries[key] = len(data)
                self._bytes += len(data)
        self._evict()

    def _evict(self) -> None:
        victims = []
        with self._lock:
            while self._bytes > self.max_bytes and self._entries:
                key, size = self._entries.popitem(last=False)
                self._bytes -= size
                victims.append(key)
        for key in victims:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / key)

    def _forget(self, key: str) -> None:
        with self._lock:
            size = self._entries.pop(key, None)
            if size is not None:
                self._bytes -= size
        if size is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / key)

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._forget(key)
        self.inner.put(key, data)

    def delete(self, key: str) -> None:
        self._forget(key)
        self.inner.delete(key)

    @property
    def cached_bytes(self) -> int:
        with self._lock:
            return self._bytes
