"""Chunk and tree ids: keyed BLAKE3-256 of the plaintext."""

from __future__ import annotations

import blake3

ID_SIZE = 32
# An all-zero id never comes out of BLAKE3 in practice; it marks a hole (a
# run of zero bytes stored as nothing) in a file's chunk list.
HOLE = bytes(ID_SIZE)


class IdKey:
    """Computes ids with the deployment's key. Immutable, so thread-safe."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("an id key is 32 bytes")
        self._key = key

    @property
    def key(self) -> bytes:
        return self._key

    def id_of(self, data: bytes | bytearray | memoryview) -> bytes:
        # blake3 releases the GIL above a few KiB, so encoder threads run in parallel.
        return blake3.blake3(data, key=self._key, max_threads=1).digest()


def short(blob_id: bytes) -> str:
    """A readable prefix of an id, for messages."""
    return blob_id.hex()[:12]
