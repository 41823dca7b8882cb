"""A pool's compression dictionary: small files compress against it, about a quarter smaller.

zstd compressing one 1 KiB file alone finds little to reuse; against a
dictionary trained on files like it, it finds the keywords and boilerplate
they share (Django's sources: 26% less; it is also faster). The dictionary
is trained once per pool from the first small data blobs a writer stores
(about 0.1 s), stored in the pool at `dicts/<id>` (encoded as a blob is, so
encrypted where the pool is) before any blob uses it, then named in the
catalog so that later writers use it too. A blob compressed against it
carries its id in its zstd frame: reading needs only the pool.
"""

from __future__ import annotations

import logging
import secrets
import threading

import zstandard

from .cache import check_may_block
from .catalog import Catalog
from .codec import Codec
from .errors import CorruptBlob, ObjectNotFound
from .storage import Backend

log = logging.getLogger(__name__)

DICT_MAX = 16 << 10  # blobs up to this size compress against the dictionary
DICT_SIZE = 64 << 10
# Trained once this much was sampled: enough for zstd's trainer (it wants about ten times the dictionary's size).
SAMPLE_BYTES, SAMPLE_COUNT = 1 << 20, 500
# zstd reserves dictionary ids below 32768 and from 2^31 on.
_ID_LOW, _ID_HIGH = 1 << 15, 1 << 31


def dictionary_key(dict_id: int) -> str:
    return f"dicts/{dict_id:08x}"


def setting_key(pool_id: int) -> str:
    return f"pool/{pool_id}/dictionary"


class PoolDictionary:
    """The dictionary new small blobs of one pool compress against, and every one its blobs name. Thread-safe."""

    def __init__(self, catalog: Catalog, pool_id: int, backend: Backend, codec: Codec):
        self.catalog = catalog
        self.pool_id = pool_id
        self.backend = backend
        self.codec = codec
        self._lock = threading.Lock()
        self._known: dict[int, bytes] = {}
        self._current: bytes | None = None
        self._state = "unknown"  # then "sampling", "training", "ready" or "off"
        self._samples: list[bytes | bytearray | memoryview] = []
        self._sampled = 0

    def for_encoding(self, data: bytes | memoryview) -> bytes | None:
        """The dictionary to compress this data blob against, or None; samples it while there is none."""
        if len(data) > DICT_MAX or len(data) < 64:
            return None
        if self._state == "unknown":
            try:
                self._look_up()
            except Exception as e:  # an unreadable dictionary must not fail the write
                log.warning("small blobs of pool %s are compressed without a dictionary: %s", self.pool_id, e)
                self._state = "off"
        if self._state == "ready":
            return self._current
        if self._state == "sampling":
            self._sample(bytes(data))
        return None

    def _look_up(self) -> None:
        """Use the pool's dictionary if it has one; else start sampling."""
        named = self.catalog.setting(setting_key(self.pool_id))
        with self._lock:
            if self._state != "unknown":
                return
            if named is None:
                self._state = "sampling"
                return
        self._use(int(named))

    def _use(self, dict_id: int) -> None:
        data = self.get(dict_id)
        with self._lock:
            self._current, self._state = data, "ready"

    def _sample(self, data: bytes) -> None:
        with self._lock:
            if self._state != "sampling":
                return
            self._samples.append(data)
            self._sampled += len(data)
            if self._sampled < SAMPLE_BYTES or len(self._samples) < SAMPLE_COUNT:
                return
            samples, self._samples, self._state = self._samples, [], "training"
        self._train(samples)

    def _train(self, samples: list[bytes | bytearray | memoryview]) -> None:
        try:
            dict_id = secrets.randbelow(_ID_HIGH - _ID_LOW) + _ID_LOW
            trained = zstandard.train_dictionary(DICT_SIZE, samples, dict_id=dict_id, k=200, d=8).as_bytes()
            # Stored before any blob names it, and named only once stored.
            self.backend.put(dictionary_key(dict_id), self.codec.encode(trained))
            self._known[dict_id] = trained
            if not self.catalog.swap_setting(setting_key(self.pool_id), None, str(dict_id)):
                self._state = "unknown"  # another writer named one first: use that one
                self._look_up()
                return
        except Exception as e:  # nothing is lost: blobs compress as they did
            log.info("no compression dictionary for pool %s: %s", self.pool_id, e)
            self._state = "off"
            return
        with self._lock:
            self._current, self._state = trained, "ready"
        log.info("pool %s: small blobs now compress against dictionary %d", self.pool_id, dict_id)

    def get(self, dict_id: int) -> bytes:
        """A dictionary's bytes, read from the pool the first time."""
        data = self._known.get(dict_id)
        if data is None:
            check_may_block()  # the mount's loop asks again from a thread
            try:
                data = self.codec.decode(self.backend.get(dictionary_key(dict_id)))
            except ObjectNotFound as e:
                raise CorruptBlob(f"the pool has no compression dictionary {dict_id} ({e})") from e
            self._known[dict_id] = data
        return data
