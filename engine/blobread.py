"""The reading side of a pool's blob store: reads checked against their ids, a cache, prefetching.

BlobStore (blobstore.py) adds the writing side and reads its pending blobs
from memory (`_pending_blob`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from .cache import BlobCache, check_may_block
from .catalog import Catalog
from .catalog.schema import blobs, packs
from .codec import Codec
from .errors import BackendError, CairnError, CorruptBlob, ObjectNotFound
from .fetch import Arrived, BlobLocation, Failed, Fetcher
from .ids import IdKey, short
from .packs import pack_key
from .storage import Backend
from .zdict import PoolDictionary

log = logging.getLogger(__name__)

# Blobs queued for prefetch at most: a listing's small files (<= 16 MiB) or a
# read-ahead; more would only evict from the 64 MiB cache what was fetched first.
PREFETCH_QUEUE = 2048
FETCH_WAIT = 60.0  # seconds a read waits for a prefetch of the same blob before reading itself
# A prefetch's failure to reach the pool is handed to the reads waiting for it (they wake at once);
# a read that comes later asks the pool itself.
FAILURE_KEPT = 1.0
# Planned reads (restores, prefetches) run this many ranged reads at once, at least: two
# decode on two cores while two more wait for the disk or the network.
FETCH_WORKERS = 4


class BlobReader:
    """Reads the blobs of one pool. Thread-safe.

    `_lock` guards `_fetching`, the blobs a prefetch will read, and
    `_failed`, the blobs a prefetch could not read as the pool did not
    answer; `_fetched` is notified as each arrives or fails.
    """

    def __init__(self, catalog: Catalog, pool_id: int, backend: Backend, id_key: IdKey, codec: Codec, cache_bytes: int):
        self.catalog = catalog
        self.pool_id = pool_id
        self.backend = backend
        self.id_key = id_key
        self.codec = codec
        self.dictionary = PoolDictionary(catalog, pool_id, backend, codec)
        self.cache = BlobCache(cache_bytes)
        self._lock = threading.Lock()
        self._fetching: set[bytes] = set()
        self._failed: dict[bytes, tuple[float, BackendError]] = {}
        self._fetched = threading.Condition(self._lock)
        connections = max(1, backend.properties.connections)
        self._prefetchers = ThreadPoolExecutor(connections, thread_name_prefix="cairn-prefetch")
        self.fetcher = Fetcher(self, max(FETCH_WORKERS, connections))

    def close(self) -> None:
        self._prefetchers.shutdown(wait=True, cancel_futures=True)
        self.fetcher.close()

    def _pending_blob(self, blob_id: bytes) -> bytes | None:
        """A blob not yet in the pool, from the writing side's memory; none here."""
        return None

    def get(self, blob_id: bytes) -> bytes:
        """The plaintext of a blob, checked against its id."""
        cached = self.cache.get(blob_id)
        if cached is not None:
            return cached
        check_may_block()
        with self._fetched:  # a prefetch reads it already: wait rather than read it twice
            waited = self._fetched.wait_for(lambda: blob_id not in self._fetching, FETCH_WAIT)
            failed = self._failed.pop(blob_id, None)
        cached = self.cache.get(blob_id) if waited else None
        if cached is None and failed is not None and time.monotonic() - failed[0] < FAILURE_KEPT:
            raise failed[1]  # the pool did not answer the prefetch: asking again would double the wait
        if cached is not None:
            return cached
        plain = self.read_one(blob_id)
        self.cache.put(blob_id, plain)
        return plain

    def read_one(self, blob_id: bytes) -> bytes:
        """A blob read from the pool (or the writing side's memory) now: no cache, no waiting for a prefetch."""
        blob = self._pending_blob(blob_id)
        if blob is None:
            loc = self.locate(blob_id)
            try:
                blob = self.backend.get(pack_key(loc.pack), loc.offset, loc.length)
            except ObjectNotFound:
                loc = self.locate(blob_id)  # repacked by garbage collection meanwhile: ask again
                blob = self._read_moved(blob_id, loc)
            if len(blob) != loc.length:
                raise CorruptBlob(f"pack {loc.pack} is truncated", blob_id=blob_id, pack=loc.pack)
        else:
            loc = None
        return self.decode_checked(blob_id, blob, loc.pack if loc else None)

    def _read_moved(self, blob_id: bytes, loc: BlobLocation) -> bytes:
        try:
            return self.backend.get(pack_key(loc.pack), loc.offset, loc.length)
        except ObjectNotFound as e:  # damage, as a failed hash check is: the reader lists the path and goes on
            message = f"blob {short(blob_id)}: pack {loc.pack} is missing"
            raise CorruptBlob(message, blob_id=blob_id, pack=loc.pack) from e

    def decode_checked(self, blob_id: bytes, blob: bytes | memoryview, pack: str | None) -> bytes:
        try:
            plain = self.codec.decode(blob, self.dictionary.get)
        except CorruptBlob as e:
            raise CorruptBlob(f"blob {short(blob_id)} in pack {pack}: {e}", blob_id=blob_id, pack=pack) from e
        if self.id_key.id_of(plain) != blob_id:
            raise CorruptBlob(f"blob {short(blob_id)} in pack {pack} fails its hash check", blob_id=blob_id, pack=pack)
        return plain

    def prefetch(
        self, blob_ids: list[bytes], parsed: Callable[[bytes, bytes], object] | None = None, *, batch: int = 1
    ) -> None:
        """Read blobs into the cache in the background, a pack range at a time, in the order given.

        Listing a snapshot directory prefetches its small files, so that
        reading them one by one finds them in memory (tar, rsync, cp -r).
        `parsed`, if given, also receives each blob's plaintext (trees are
        kept parsed elsewhere, safe from the cache's eviction). With `batch`,
        nothing is asked until that many are missing, unless the first is:
        a read-ahead then costs one catalog query per few chunks, not one per
        chunk (~350 µs each, a third of a 1 MiB chunk's decoding).
        """
        with self._lock:
            room = PREFETCH_QUEUE - len(self._fetching)
            wanted = [i for i in blob_ids if i not in self._fetching and not self.cache.contains(i)][:room]
            if len(wanted) < batch and (not wanted or wanted[0] != blob_ids[0]):
                return
            self._fetching.update(wanted)
        if wanted:
            self._prefetchers.submit(self._prefetch, wanted, parsed)

    def _prefetch(self, blob_ids: list[bytes], parsed: Callable[[bytes, bytes], object] | None) -> None:
        unreachable: dict[bytes, BackendError] = {}

        def arrived(blob_id: bytes, plain: bytes) -> None:
            self.cache.put(blob_id, plain)
            if parsed is not None:
                parsed(blob_id, plain)
            self._arrived([blob_id])

        def failed(blob_id: bytes, e: CairnError) -> None:
            if isinstance(e, BackendError) and e.temporary:  # a read waiting for it fails at once with this
                unreachable[blob_id] = e

        try:
            self.fetcher.read(blob_ids, arrived, failed)
        except Exception:  # a prefetch only saves time; the read itself reports errors
            log.debug("prefetch failed", exc_info=True)
        finally:
            if unreachable:
                self._failed_now(unreachable)
            self._arrived(blob_ids)

    def _failed_now(self, unreachable: dict[bytes, BackendError]) -> None:
        with self._lock:
            if len(self._failed) > PREFETCH_QUEUE:
                self._failed.clear()  # only reads already waiting need them
            now = time.monotonic()
            self._failed.update((i, (now, e)) for i, e in unreachable.items() if i in self._fetching)

    def _arrived(self, blob_ids: list[bytes]) -> None:
        with self._fetched:
            self._fetching.difference_update(blob_ids)
            self._fetched.notify_all()

    def read_many(self, blob_ids: list[bytes], arrived: Arrived, failed: Failed) -> None:
        """Read many blobs in pack order (see fetch.py); each arrives or fails once, on a worker thread."""
        check_may_block()
        self.fetcher.read(blob_ids, arrived, failed)

    def locate_many(self, blob_ids: list[bytes]) -> dict[bytes, BlobLocation]:
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(
                select(blobs.c.id, packs.c.name, blobs.c.offset, blobs.c.length, blobs.c.raw_length)
                .join(packs, packs.c.id == blobs.c.pack_id)
                .where(blobs.c.pool_id == self.pool_id, blobs.c.id.in_(blob_ids))
            ).all()
        return {bytes(r[0]): BlobLocation(r[1], r[2], r[3], r[4]) for r in rows}

    def locate(self, blob_id: bytes) -> BlobLocation:
        found = self.locate_many([blob_id]).get(blob_id)
        if found is None:  # damage to a snapshot: EIO, as a file system reports a bad block
            raise CorruptBlob(f"blob {short(blob_id)} is not in the pool", blob_id=blob_id)
        return found
