"""The blob store of one pool: dedup, encoding, packing and upload; reads are in blobread.py.

A blob is pending from the moment it is accepted until the pack holding it
is stored in the backend and its index rows are committed; only then is it
known. Pending blobs are readable from memory.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, update

from .blobread import BlobReader
from .cache import check_may_block, memory_only
from .catalog import Catalog
from .catalog.schema import blobs, packs
from .codec import Codec
from .errors import CairnError, CorruptBlob
from .ids import IdKey, short
from .inflight import InFlight
from .knownids import KnownIds
from .packs import DATA, PACK_TARGET, TREE, PackBuilder, pack_key
from .storage import Backend

log = logging.getLogger(__name__)

# Blobs below 64 KiB go to the encoders in batches of about 256 KiB: one
# hand-over per blob would cost as much as encoding a small file.
BATCH_BELOW = 64 << 10
BATCH_BYTES = 256 << 10
# Writes wait for an unreachable pool this long, trying again every 1 s doubling to 30 s.
PAUSE_MAX = 3600.0
PAUSE_FIRST, PAUSE_STEP = 1.0, 30.0


@dataclass(eq=False)
class _Sealed:
    """A full pack. Its bytes and name are made outside the store's lock, on first use."""

    builder: PackBuilder
    name: str = ""
    data: bytes = b""
    upload: Future[None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def finish(self, codec: Codec) -> bool:
        """Make the pack's bytes; True the first time (the blobs' separate buffers can go then)."""
        with self.lock:
            if self.name:
                return False
            self.name, self.data = self.builder.seal(codec)
            self.builder.parts = []  # the bytes live in `data` now: hold each blob once, not twice
            return True


_REPOINT = (
    update(blobs)
    .where(blobs.c.pool_id == bindparam("b_pool_id"), blobs.c.id == bindparam("b_id"))
    .values(pack_id=bindparam("b_pack_id"), offset=bindparam("b_offset"), length=bindparam("b_length"))
)


class BlobStore(BlobReader):
    """Stores and reads the blobs of one pool. Thread-safe.

    `_lock` (the reader's) also guards `_known`, `_pending`, `_open`, `_unsent` and the failures;
    `inflight` is only changed under it too, so a put and a garbage collection
    agree on whether a blob stays.
    `_flush_lock` lets one flush run at a time. An encode failure is sticky
    (its blobs are lost: every later put and flush raise it); after an
    upload failure each put first stores the failed packs again, and raises
    if that fails.
    Encoding runs on `_encoders`, uploads on `_uploaders`; no lock is held
    across backend or catalog I/O.
    """

    def __init__(
        self,
        catalog: Catalog,
        pool_id: int,
        backend: Backend,
        id_key: IdKey,
        codec: Codec,
        *,
        encoders: int = 2,
        cache_bytes: int = 64 << 20,
    ):
        super().__init__(catalog, pool_id, backend, id_key, codec, cache_bytes)
        self._known: KnownIds | None = None  # loaded on first write: a restore never needs it
        self.inflight = InFlight()
        # Accepted blobs not yet stored: the encoded (header, body), or None while encoding.
        self._pending: dict[bytes, tuple[bytes, bytes | memoryview] | None] = {}
        self._open = PackBuilder()
        self._open_since = time.monotonic()
        self._unsent: list[_Sealed] = []
        self._failure: BaseException | None = None  # sticky: an encode failed
        self._upload_failure: BaseException | None = None  # until a flush succeeds
        self.offline: str | None = None  # why the pool did not answer, while writes pause
        self.pause_max = PAUSE_MAX
        self._flush_lock = threading.Lock()
        connections = max(1, backend.properties.connections)
        self._encoders = ThreadPoolExecutor(encoders, thread_name_prefix="cairn-encode")
        self._uploaders = ThreadPoolExecutor(connections, thread_name_prefix="cairn-upload")
        # Bounds memory: chunks being encoded, and sealed packs not yet stored.
        self._encode_slots = threading.BoundedSemaphore(encoders * 4)
        self._upload_slots = threading.BoundedSemaphore(connections + 1)
        self._inflight: set[Future[None]] = set()
        self._batch: list[tuple[bytes, bytes, int]] = []
        self._batch_since = time.monotonic()
        self._batch_bytes = 0
        self.packs_stored = 0  # counts up as packs are stored: what was pending may be stored now
        self.stats = {"new_blobs": 0, "new_trees": 0, "new_bytes": 0, "stored_bytes": 0, "dedup_hits": 0}

    def _ids(self) -> KnownIds:
        """The known blobs, read from the catalog the first time (outside the lock; nothing is known before)."""
        known = self._known
        if known is None:
            query = select(blobs.c.id, blobs.c.raw_length).where(blobs.c.pool_id == self.pool_id).order_by(blobs.c.id)
            with self.catalog.engine.connect() as conn:
                rows = conn.execution_options(yield_per=10_000).execute(query)
                loaded = KnownIds((bytes(r[0]), r[1]) for r in rows)
            with self._lock:
                if self._known is None:
                    self._known = loaded
                known = self._known
        return known

    # -- writing -------------------------------------------------------------

    def is_stored(self, blob_id: bytes) -> bool:
        known = self._ids()
        with self._lock:
            return blob_id in known

    def forget(self, blob_ids: Iterable[bytes]) -> set[bytes]:
        """Drop blobs from the known set (they are about to be deleted), except those
        still in flight; returns the ones dropped. A later put of the same data stores it anew."""
        known = self._ids()
        with self._lock:
            ids = [i for i in blob_ids if i in known]
            dropped = set(ids) - self.inflight.unsafe_to_drop(ids)
            for i in dropped:
                known.discard(i)
            self.inflight.forgotten |= dropped
        return dropped

    def hold(self, blob_id: bytes) -> bool:
        """Keep a blob that a blob about to be put refers to, as a put that dedups would keep it.

        False if it is not stored or accepted (a collection may be deleting
        it): then the caller must not refer to it.
        """
        known = self._ids()
        with self._lock:
            if blob_id not in known and blob_id not in self._pending:
                return False
            self.inflight.put(blob_id)
            return True

    def all_stored(self, blob_ids: Iterable[bytes]) -> bool:
        """Whether every blob is stored: one lock round-trip for a whole file's chunks."""
        known = self._ids()
        with self._lock:
            return all(i in known for i in blob_ids)

    def put(self, data: bytes, kind: int = DATA, blob_id: bytes | None = None) -> bytes:
        """Accept a chunk or tree; returns its id at once, encodes in the background.

        `blob_id` is the id a caller already computed with this store's `id_key` (not checked).
        """
        blob_id = blob_id or self.id_key.id_of(data)
        self._pause_while_offline()
        known = self._ids()
        with self._lock:
            self._raise_failure()
            length = known.get(blob_id)
            if length is None and blob_id in self._pending:
                length = len(data)  # accepted already
            if length is not None:
                if length != len(data):
                    raise CorruptBlob(
                        f"id collision: blob {short(blob_id)} has length {length}, not {len(data)}",
                        blob_id=blob_id,
                    )
                self.stats["dedup_hits"] += 1
                self.inflight.put(blob_id)
                return blob_id
            # Reserve the id so that a second put of the same data dedups.
            self._pending[blob_id] = None
            self.inflight.put(blob_id)
        item = (blob_id, data, kind)
        if len(data) >= BATCH_BELOW:
            self._submit([item])
        else:
            with self._lock:
                if not self._batch:
                    self._batch_since = time.monotonic()
                self._batch.append(item)
                self._batch_bytes += len(data)
                full = self._batch_bytes >= BATCH_BYTES
            if full:
                self._submit_batch()
        return blob_id

    def _submit_batch(self) -> None:
        with self._lock:
            items, self._batch, self._batch_bytes = self._batch, [], 0
        if items:
            self._submit(items)

    def _submit(self, items: list[tuple[bytes, bytes, int]]) -> None:
        # A caller that must not block (the FUSE loop) goes past the bound
        # instead of waiting: its batches are small.
        slot = self._encode_slots.acquire(blocking=not memory_only.get())
        fut = self._encoders.submit(self._encode, items)
        with self._lock:
            self._inflight.add(fut)
        fut.add_done_callback(functools.partial(self._encoded, slot))

    def _encoded(self, slot: bool, fut: Future[None]) -> None:
        if slot:
            self._encode_slots.release()
        with self._lock:
            self._inflight.discard(fut)
            if fut.exception() is not None and self._failure is None:
                self._failure = fut.exception()

    def _encode(self, items: list[tuple[bytes, bytes, int]]) -> None:
        try:
            blobs = [
                self.codec.encode_parts(data, dictionary=self.dictionary.for_encoding(data) if kind == DATA else None)
                for _, data, kind in items
            ]
        except BaseException:
            with self._lock:
                for blob_id, _, _ in items:
                    self._pending.pop(blob_id, None)
            raise
        sealed = []
        with self._lock:
            for (blob_id, data, kind), blob in zip(items, blobs, strict=True):
                self._open.add(blob_id, kind, blob, len(data))
                self._pending[blob_id] = blob
                self.stats["new_blobs"] += 1
                self.stats["new_trees"] += kind == TREE
                self.stats["new_bytes"] += len(data)
                self.stats["stored_bytes"] += len(blob[0]) + len(blob[1])
                if self._open.size >= PACK_TARGET:
                    sealed.append(self._seal_locked())
        for pack in sealed:
            if pack is not None:
                self._send(pack)

    def _seal_locked(self) -> _Sealed | None:
        builder = self._open
        if not builder.entries:
            return None
        sealed = _Sealed(builder)
        self._open = PackBuilder()
        self._open_since = time.monotonic()
        self._unsent.append(sealed)
        return sealed

    def _send(self, sealed: _Sealed) -> None:
        self._upload_slots.acquire()
        sealed.upload = self._uploaders.submit(self._upload, sealed)
        sealed.upload.add_done_callback(lambda _f: self._upload_slots.release())

    def _upload(self, sealed: _Sealed) -> None:
        try:
            self._finish(sealed)
            self.backend.put(pack_key(sealed.name), sealed.data)
            self._commit_pack(sealed)
        except BaseException as e:
            log.warning("pack upload failed; a flush retries it: %s", e)
            with self._lock:
                self._upload_failure = e
            raise

    def _finish(self, sealed: _Sealed) -> None:
        """Seal a pack; blobs still pending are then read from its bytes (16 MiB held once, not twice)."""
        if not sealed.finish(self.codec):
            return
        view = memoryview(sealed.data)
        with self._lock:
            for e in sealed.builder.entries:
                if e.blob_id in self._pending:
                    self._pending[e.blob_id] = (b"", view[e.offset : e.offset + e.length])

    def _commit_pack(self, sealed: _Sealed) -> None:
        entries = sealed.builder.entries
        with self.catalog.engine.begin() as conn:
            row = {"pool_id": self.pool_id, "name": sealed.name, "size": len(sealed.data),
                   "blob_count": len(entries), "created": time.time()}  # fmt: skip
            self.catalog.insert_ignore(conn, packs, [row])  # a retried upload may race the first
            existing = conn.execute(
                select(packs.c.id).where(packs.c.pool_id == self.pool_id, packs.c.name == sealed.name)
            ).scalar_one()
            rows = [
                {
                    "pool_id": self.pool_id,
                    "id": e.blob_id,
                    "pack_id": existing,
                    "offset": e.offset,
                    "length": e.length,
                    "raw_length": e.raw_length,
                    "kind": e.kind,
                }
                for e in entries
            ]
            self.catalog.insert_ignore(conn, blobs, rows)
            with self._lock:
                stored_again = [r for r in rows if r["id"] in self.inflight.forgotten]
            if stored_again:  # their old rows name a pack garbage collection is deleting
                self.catalog.executemany(conn, _REPOINT, [{f"b_{k}": v for k, v in r.items()} for r in stored_again])
        known = self._ids()
        with self._lock:
            self.packs_stored += 1
            for e in entries:
                known.add(e.blob_id, e.raw_length)
                self._pending.pop(e.blob_id, None)
            if sealed in self._unsent:
                self._unsent.remove(sealed)

    def flush(self) -> None:
        """Return once every accepted blob is stored and indexed.

        While the pool is unreachable (an error that says it is temporary)
        this waits and tries again, up to `pause_max` seconds: writes pause
        and resume by themselves, and nothing accepted is dropped.
        """
        delay, waited = PAUSE_FIRST, 0.0
        while True:
            try:
                self._flush_once()
                self.offline = None
                return
            except CairnError as e:
                if not e.temporary or waited >= self.pause_max:
                    raise
                self.offline = str(e)
                log.warning("pool unreachable (%s): writes paused; trying again in %.1f s", e, delay)
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, PAUSE_STEP)

    def _pause_while_offline(self) -> None:
        """Before accepting more, store the packs whose upload failed: wait for an unreachable pool,
        try a refusing one (a full disk, which may have room again) once and raise what it says."""
        with self._lock:
            failure = self._upload_failure
        if failure is None:
            return
        check_may_block()
        if isinstance(failure, CairnError) and failure.temporary:
            self.flush()
        else:
            self._flush_once()

    def _flush_once(self) -> None:
        with self._flush_lock:
            self._wait_encoders()
            with self._lock:
                self._raise_failure(uploads=False)  # those are retried below
                self._seal_locked()
                unsent = list(self._unsent)
            for sealed in unsent:
                if sealed.upload is not None and sealed.upload.exception() is None:
                    continue
                # Not sent, or its upload failed: send it on this thread, so a
                # failure is retried once and then reaches the caller.
                self._finish(sealed)
                self.backend.put(pack_key(sealed.name), sealed.data)
                self._commit_pack(sealed)
            with self._lock:
                self._upload_failure = None

    def flush_if_older(self, seconds: float) -> None:
        """Store the open pack and the small blobs not yet encoded if they have waited this long
        (idle writers: a small file written alone is stored within seconds), and retry failed uploads."""
        now = time.monotonic()
        with self._lock:
            due = self._open.entries and now - self._open_since >= seconds
            due = due or (self._batch and now - self._batch_since >= seconds) or self._upload_failure is not None
        if due:
            self._flush_once()  # the caller comes back soon: no pausing here

    def _wait_encoders(self) -> None:
        self._submit_batch()
        while True:
            with self._lock:
                inflight = list(self._inflight)
            if not inflight:
                return
            for fut in inflight:
                fut.exception()

    def check(self) -> None:
        """Raise what keeps accepted blobs from being stored: a failed encode, or a pack upload that fails again.

        May block: packs whose upload failed are stored again first, as a put does.
        """
        with self._lock:
            self._raise_failure(uploads=False)
        self._pause_while_offline()

    def _raise_failure(self, uploads: bool = True) -> None:
        if self._failure is not None:
            raise self._failure
        if uploads and self._upload_failure is not None:
            raise self._upload_failure

    def close(self) -> None:
        self._encoders.shutdown(wait=True)
        self._uploaders.shutdown(wait=True)
        super().close()

    def _pending_blob(self, blob_id: bytes) -> bytes | None:
        """An accepted blob's encoded bytes, from memory until its pack is stored."""
        while True:
            with self._lock:
                if blob_id not in self._pending:
                    return None
                blob = self._pending[blob_id]
                if blob is not None:
                    return blob[0] + blob[1]
            # Accepted but still being encoded.
            self._wait_encoders()
