"""Planned reads of many blobs: located in batches, read pack by pack in few large ranges, several at once.

Restores, archives and the mount's prefetch read this way. Each blob's pack
and offset come from the catalog 500 at a time (a PostgreSQL catalog costs a
round trip per batch, not per blob); the wanted blobs of one pack are read in
ranges that take in small gaps between them; the ranges go to several
workers, which decode and check each blob and hand it on as it arrives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from .cache import BlobCache
from .errors import BackendError, CairnError, CorruptBlob, ObjectNotFound
from .packs import pack_key
from .storage import Backend

LOCATE_BATCH = 500
# Reading through a gap this long between two wanted blobs costs less than a
# second request would: ~1 ms of disk or network either way.
GAP = 256 << 10
SPAN_MAX = 8 << 20  # one request at most: half a pack, so ranges in memory stay few MiB per worker

Arrived = Callable[[bytes, bytes], None]
Failed = Callable[[bytes, CairnError], None]


@dataclass(frozen=True)
class BlobLocation:
    pack: str
    offset: int
    length: int
    raw_length: int


class Blobs(Protocol):
    """What planned reads need of a pool's reader (blobread.py)."""

    backend: Backend
    cache: BlobCache

    def locate_many(self, blob_ids: list[bytes]) -> dict[bytes, BlobLocation]: ...
    def decode_checked(self, blob_id: bytes, blob: bytes | memoryview, pack: str | None) -> bytes: ...
    def read_one(self, blob_id: bytes) -> bytes: ...


@dataclass
class Span:
    """One ranged read of a pack and the blobs it holds."""

    pack: str
    start: int
    end: int
    blobs: list[tuple[bytes, BlobLocation]] = field(default_factory=list)


def plan(located: Iterable[tuple[bytes, BlobLocation]]) -> list[Span]:
    """Ranged reads covering the blobs, the packs in the order they are first needed, each pack's in offset order."""
    by_pack: dict[str, list[tuple[bytes, BlobLocation]]] = {}
    for blob_id, loc in located:
        by_pack.setdefault(loc.pack, []).append((blob_id, loc))
    spans: list[Span] = []
    for pack, here in by_pack.items():
        here.sort(key=lambda b: b[1].offset)
        span: Span | None = None
        for blob_id, loc in here:
            end = loc.offset + loc.length
            if span is None or loc.offset - span.end > GAP or end - span.start > SPAN_MAX:
                span = Span(pack, loc.offset, end)
                spans.append(span)
            span.blobs.append((blob_id, loc))
            span.end = max(span.end, end)
    return spans


class Fetcher:
    """Runs planned reads of one pool's blobs on `workers` threads. Thread-safe."""

    def __init__(self, reader: Blobs, workers: int):
        self.reader = reader
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="cairn-fetch")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def read(self, blob_ids: Iterable[bytes], arrived: Arrived, failed: Failed) -> None:
        """Read each blob once: `arrived(id, plaintext)` or `failed(id, error)`, from the workers.

        Returns when every blob has arrived or failed. Blobs already in the
        cache arrive from there. At most `workers + 2` ranges are in memory at once.
        """
        wanted: list[bytes] = []
        for blob_id in dict.fromkeys(blob_ids):
            cached = self.reader.cache.get(blob_id)
            if cached is not None:
                arrived(blob_id, cached)
            else:
                wanted.append(blob_id)
        located: dict[bytes, BlobLocation] = {}
        for i in range(0, len(wanted), LOCATE_BATCH):
            located.update(self.reader.locate_many(wanted[i : i + LOCATE_BATCH]))
        # Not in the catalog: a blob this process accepted and has not stored yet, or damage; read_one() tells which.
        self._one_by_one([b for b in wanted if b not in located], arrived, failed)
        slots = threading.BoundedSemaphore(self.workers + 2)
        futures: list[Future[None]] = []
        for span in plan((b, located[b]) for b in wanted if b in located):
            slots.acquire()
            future = self._pool.submit(self._read_span, span, arrived, failed)
            future.add_done_callback(lambda _f: slots.release())
            futures.append(future)
        for future in futures:
            future.result()

    def _read_span(self, span: Span, arrived: Arrived, failed: Failed) -> None:
        try:
            data = memoryview(self.reader.backend.get(pack_key(span.pack), span.start, span.end - span.start))
        except ObjectNotFound:  # repacked by garbage collection meanwhile: each blob read where it is now
            self._one_by_one([b for b, _ in span.blobs], arrived, failed)
            return
        except BackendError as e:
            for blob_id, _ in span.blobs:
                failed(blob_id, e)
            return
        for blob_id, loc in span.blobs:
            blob = data[loc.offset - span.start : loc.offset - span.start + loc.length]
            if len(blob) != loc.length:
                failed(blob_id, CorruptBlob(f"pack {span.pack} is truncated", blob_id=blob_id, pack=span.pack))
                continue
            try:
                plain = self.reader.decode_checked(blob_id, blob, span.pack)
            except CorruptBlob as e:
                failed(blob_id, e)
                continue
            arrived(blob_id, plain)

    def _one_by_one(self, blob_ids: list[bytes], arrived: Arrived, failed: Failed) -> None:
        for blob_id in blob_ids:
            try:
                plain = self.reader.read_one(blob_id)  # not get(): a prefetch would wait for itself
            except (CorruptBlob, BackendError) as e:
                failed(blob_id, e)
                continue
            arrived(blob_id, plain)
