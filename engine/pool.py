"""A pool: a backend plus its identification file `cairn-pool.json`.

The identification file (structure version, pool UUID, kind, created) must
match the catalog whenever a pool is opened; reading it is also the
connectivity check. The deployment's keys are stored beside it so that a
catalog rebuilt from the pool alone can read it and keeps deduplicating
against old chunks: wrapped (`keys/deployment.json`) in an encrypted pool,
the id key alone in plain (`keys/id-key.json`) otherwise.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .catalog import Catalog
from .catalog.schema import keys, pools
from .codec import CodecConfig
from .errors import BackendError, Exists, InvalidArgument, ObjectNotFound, PoolMismatch, PoolMissing
from .keyring import DEPLOYMENT_KEYS, DeploymentKeys, Unlock, unwrap, wrap
from .storage import Backend, open_backend
from .storage.filter import Filter, find_layer
from .storage.retry import Retry
from .storage.spool import Spool

POOL_FILE = "cairn-pool.json"
ID_KEY_FILE = "keys/id-key.json"
STRUCTURE = 1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolIdentity:
    uuid: str
    kind: str
    structure: int
    created: float

    def to_json(self) -> bytes:
        doc = {"structure": self.structure, "uuid": self.uuid, "kind": self.kind, "created": self.created}
        return json.dumps(doc, indent=2).encode() + b"\n"


KeyRows = tuple[PoolIdentity, dict[str, bytes]]


@dataclass(frozen=True)
class OpenPool:
    """A pool as a deployment opened it: its catalog row, backend, the deployment's keys, its codec settings."""

    id: int
    uuid: str
    kind: str
    backend: Backend
    keys: DeploymentKeys
    codec: CodecConfig


def create_pool(backend: Backend, kind: str, keys: DeploymentKeys, unlock: Unlock | None) -> KeyRows:
    """Write a new pool's keys and identification file; refuse a used backend.

    Returns the pool's identity and the key rows the catalog keeps (never a plain data key).
    """
    if backend.stat(POOL_FILE) is not None:
        raise PoolMismatch(f"{backend.describe()} already holds a pool")
    if keys.encrypted:
        if unlock is None:
            raise InvalidArgument("an encrypted pool needs a passphrase or a key file")
        rows = {"deployment": wrap(keys, unlock)}
    else:
        rows = {"id": keys.id_key}
    return write_pool(backend, kind, rows), rows


def write_pool(backend: Backend, kind: str, rows: dict[str, bytes]) -> PoolIdentity:
    """Write a pool's keys as the catalog's key rows hold them, then its identification file.

    A deployment's further pool (the image pool) takes its keys this way: no unlock needed.
    """
    if backend.stat(POOL_FILE) is not None:
        raise PoolMismatch(f"{backend.describe()} already holds a pool")
    identity = PoolIdentity(str(uuid.uuid4()), kind, STRUCTURE, time.time())
    # The keys are written before the identification file: a pool whose
    # identification file exists always has its keys.
    if "deployment" in rows:
        backend.put(DEPLOYMENT_KEYS, rows["deployment"])
    else:
        backend.put(ID_KEY_FILE, json.dumps({"id_key": rows["id"].hex()}).encode())
    backend.put(POOL_FILE, identity.to_json())
    return identity


def keys_of(rows: dict[str, bytes], backend: Backend, unlock: Unlock | None) -> DeploymentKeys:
    """The deployment's keys from the catalog's key rows, or from the pool if the catalog has none."""
    if "deployment" in rows:
        return unwrap(rows["deployment"], unlock)
    if "id" in rows:
        return DeploymentKeys(rows["id"])
    return read_keys(backend, unlock)


def read_keys(backend: Backend, unlock: Unlock | None) -> DeploymentKeys:
    """The keys as stored in the pool (for a catalog rebuilt from it)."""
    return pool_keys(backend, unlock)[0]


def pool_keys(backend: Backend, unlock: Unlock | None) -> tuple[DeploymentKeys, dict[str, bytes]]:
    """The keys as stored in the pool and the catalog's key rows for them, from one read of the pool."""
    try:
        wrapped = backend.get(DEPLOYMENT_KEYS)
    except ObjectNotFound:
        found = DeploymentKeys(read_id_key(backend))
        return found, {"id": found.id_key}
    return unwrap(wrapped, unlock), {"deployment": wrapped}


def key_rows(keys: DeploymentKeys, backend: Backend) -> dict[str, bytes]:
    """The catalog's key rows for keys read from the pool."""
    if keys.encrypted:
        return {"deployment": backend.get(DEPLOYMENT_KEYS)}
    return {"id": keys.id_key}


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


def check_or_offline(backend: Backend, expected_uuid: str) -> None:
    """The identity check on opening; a pool with a write-back spool that does not answer opens offline.

    With a spool, writes land on local disk and what it holds is read from
    there: one request decides, not a round of retries. Until the check has
    passed, the spool uploads nothing (it checks first), so a pool that
    turns out to be another one is never written to.
    """
    spool = find_layer(backend, Spool)
    if spool is None:
        check_identity(backend, expected_uuid)
        return
    if spool.local.stat(POOL_FILE) is not None:  # made here, not uploaded yet: the spool's copy is the identity
        check_identity(spool.local, expected_uuid)
        return
    spool.before_upload = lambda: check_identity(spool.inner, expected_uuid)
    try:
        check_identity(_innermost(spool), expected_uuid)
    except PoolMissing as e:
        cause = e.__cause__
        if not isinstance(cause, BackendError) or isinstance(cause, ObjectNotFound) or not cause.temporary:
            raise
        log.warning("%s; opening it offline: writes go to the write-back spool", e)
        spool.online, spool.last_error = False, str(e)
        retry = find_layer(backend, Retry)
        if retry is not None:
            retry.mark_offline(str(e))
    else:
        spool.before_upload = None


def _innermost(backend: Backend) -> Backend:
    while isinstance(backend, Filter):
        backend = backend.inner
    return backend


def read_id_key(backend: Backend) -> bytes:
    try:
        return bytes.fromhex(json.loads(backend.get(ID_KEY_FILE))["id_key"])
    except (ObjectNotFound, KeyError, ValueError) as e:
        raise PoolMissing(f"pool at {backend.describe()} has no readable id key") from e


def backend_for(config: dict[str, Any], data_dir: Path, kind: str) -> Backend:
    """A pool's backend with this machine's read cache and write-back spool for it, apart per pool kind."""
    return open_backend(config, cache_dir=data_dir / "cache" / kind, spool_dir=data_dir / "writeback" / kind)


def _holds_data(backend: Backend) -> bool:
    return any(True for _ in backend.list("packs/")) or any(True for _ in backend.list("snapshots/"))


def open_file_pool(
    catalog: Catalog, data_dir: Path, create: bool, unlock: Unlock | None, encrypt: bool,
    pool_config: dict[str, Any] | None,
) -> OpenPool:  # fmt: skip
    """The deployment's file pool as its catalog names it, or a new one (and its catalog rows) if `create`."""
    with catalog.engine.begin() as conn:
        row = conn.execute(select(pools).where(pools.c.kind == "file")).first()
        if row is not None:
            if pool_config is not None and pool_config != json.loads(row.backend):
                raise Exists(f"the deployment in {data_dir} has a file pool already; its configuration differs")
            backend = backend_for(json.loads(row.backend), data_dir, "file")
            check_or_offline(backend, row.uuid)
            rows = {r.purpose: bytes(r.material) for r in conn.execute(select(keys.c.purpose, keys.c.material))}
            found = keys_of(rows, backend, unlock)
            return OpenPool(row.id, row.uuid, row.kind, backend, found, CodecConfig.from_json(row.codec))
        config = pool_config or {"kind": "local", "path": str(data_dir / "pool")}
        backend = backend_for(config, data_dir, "file")
        if backend.stat(POOL_FILE) is not None:
            if _holds_data(backend):
                raise PoolMismatch(
                    f"{backend.describe()} holds a pool the catalog does not know; "
                    "run `cairn catalog rebuild` to recreate the catalog from it"
                )
            # An empty pool whose creation was cut short before its catalog rows committed: take it.
            identity = read_identity(backend)
            new_keys, rows = pool_keys(backend, unlock)
        elif not create:
            raise PoolMissing(f"no pool in {data_dir}")
        else:
            new_keys = DeploymentKeys.new(encrypt)
            identity, rows = create_pool(backend, "file", new_keys, unlock)
        pool_id = Catalog.insert_id(
            conn,
            pools.insert().values(
                uuid=identity.uuid,
                kind="file",
                backend=json.dumps(config),
                structure=STRUCTURE,
                created=identity.created,
            ),
        )
        for purpose, material in rows.items():
            conn.execute(keys.insert().values(purpose=purpose, material=material))
        return OpenPool(pool_id, identity.uuid, "file", backend, new_keys, CodecConfig())
