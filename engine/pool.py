"""A pool: a backend plus its identification file `cairn-pool.json`.

The identification file (structure version, pool UUID, kind, created) must
match the catalog whenever a pool is opened; reading it is also the
connectivity check. The deployment's id key is stored beside it
(`keys/id-key.json`) so that a catalog rebuilt from the pool alone keeps
deduplicating against old chunks.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import BackendError, ObjectNotFound, PoolMismatch, PoolMissing
from .storage import Backend

POOL_FILE = "cairn-pool.json"
ID_KEY_FILE = "keys/id-key.json"
STRUCTURE = 1


@dataclass(frozen=True)
class PoolIdentity:
    uuid: str
    kind: str
    structure: int
    created: float

    def to_json(self) -> bytes:
        doc = {"structure": self.structure, "uuid": self.uuid, "kind": self.kind, "created": self.created}
        return json.dumps(doc, indent=2).encode() + b"\n"


def create_pool(backend: Backend, kind: str) -> tuple[PoolIdentity, bytes]:
    """Write a new pool's identification file and id key; refuse a used backend."""
    if backend.stat(POOL_FILE) is not None:
        raise PoolMismatch(f"{backend.describe()} already holds a pool")
    identity = PoolIdentity(str(uuid.uuid4()), kind, STRUCTURE, time.time())
    id_key = os.urandom(32)
    # The key is written before the identification file: a pool whose
    # identification file exists always has its key.
    backend.put(ID_KEY_FILE, json.dumps({"id_key": id_key.hex()}).encode())
    backend.put(POOL_FILE, identity.to_json())
    return identity, id_key


def read_identity(backend: Backend) -> PoolIdentity:
    try:
        doc: dict[str, Any] = json.loads(backend.get(POOL_FILE))
    except ObjectNotFound as e:
        raise PoolMissing(f"no pool at {backend.describe()}: {POOL_FILE} is missing") from e
    except BackendError as e:
        raise PoolMissing(f"pool at {backend.describe()} cannot be reached: {e}") from e
    except ValueError as e:
        raise PoolMismatch(f"{POOL_FILE} at {backend.describe()} is not valid JSON") from e
    try:
        identity = PoolIdentity(str(doc["uuid"]), str(doc["kind"]), int(doc["structure"]), float(doc["created"]))
    except (KeyError, TypeError, ValueError) as e:
        raise PoolMismatch(f"{POOL_FILE} at {backend.describe()} lacks a field: {e}") from e
    if identity.structure > STRUCTURE:
        raise PoolMismatch(
            f"pool at {backend.describe()} has structure version {identity.structure}; "
            f"this Cairn reads up to {STRUCTURE}"
        )
    return identity


def check_identity(backend: Backend, expected_uuid: str) -> PoolIdentity:
    """The connectivity and identity check run whenever a pool is opened."""
    identity = read_identity(backend)
    if identity.uuid != expected_uuid:
        raise PoolMismatch(
            f"pool at {backend.describe()} is pool {identity.uuid}, but the catalog expects pool {expected_uuid}"
        )
    return identity


def read_id_key(backend: Backend) -> bytes:
    try:
        return bytes.fromhex(json.loads(backend.get(ID_KEY_FILE))["id_key"])
    except (ObjectNotFound, KeyError, ValueError) as e:
        raise PoolMissing(f"pool at {backend.describe()} has no readable id key") from e
