"""The image pool on a backend of its own: opening it, and what it holds (creating it: imagesetup.py).

Without a `pools` row of kind "image", a deployment's disk images share the
file pool: their blocks, patches and block map nodes are blobs of the file
pool's blob store. With one, those go to the image pool and its own blob
store (local block storage, say, while the file pool is on S3: object stores
are poor at small random reads), while files, trees and snapshot objects
stay in the file pool. Both pools hold the deployment's keys, so ids agree
across them and an encrypted deployment encrypts both.

Nothing is migrated: an image pool can only be created while no image holds
blocks in the file pool. New blobs of both pools are encoded as the file
pool's codec settings say (`pool configure` applies to both). The file pool
keeps a note of the image pool (`image-pool.json`: its uuid and where it
is, never credentials) so that a catalog rebuilt from the file pool alone
knows the images' blocks are elsewhere.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from .catalog import Catalog
from .catalog.schema import blobs, packs, pools
from .codec import CodecConfig
from .errors import ObjectNotFound, PoolMismatch
from .keyring import DeploymentKeys
from .pool import OpenPool, backend_for, check_or_offline
from .storage import Backend
from .storage.spool import Spool

if TYPE_CHECKING:
    from .blobstore import BlobStore

IMAGE = "image"
NOTE = "image-pool.json"


def open_image_pool(catalog: Catalog, data_dir: Path, deployment_keys: DeploymentKeys) -> OpenPool | None:
    """The deployment's image pool if it has one of its own (checked as the file pool is), else None."""
    with catalog.engine.connect() as conn:
        row = conn.execute(select(pools).where(pools.c.kind == IMAGE)).first()
    if row is None:
        return None
    backend = backend_for(json.loads(row.backend), data_dir, IMAGE)
    check_or_offline(backend, row.uuid)
    return OpenPool(row.id, row.uuid, IMAGE, backend, deployment_keys, CodecConfig.from_json(row.codec))


def image_pool_note(file_pool: Backend) -> dict[str, str] | None:
    """The file pool's note of the deployment's image pool (uuid, backend described), if it has one."""
    try:
        doc = json.loads(file_pool.get(NOTE))
    except ObjectNotFound:
        return None
    except ValueError as e:
        raise PoolMismatch(f"{NOTE} at {file_pool.describe()} is not valid JSON") from e
    return {"uuid": str(doc.get("uuid")), "backend": str(doc.get("backend"))}


def pool_counts(catalog: Catalog, pool_id: int) -> dict[str, int]:
    """A pool's packs, blobs, stored bytes (packs) and unique bytes (blobs before the codecs).

    Counting the blobs reads every blob row (1.2 s for a million on SQLite), so the blob figures are kept
    per pool and counted again only when its packs changed: a blob row comes and goes with its pack's
    (stored, repacked, collected), so the packs' count, newest id and bytes say when they may have.
    """
    with catalog.engine.connect() as conn:
        n_packs, stored, newest = conn.execute(
            select(func.count(), func.coalesce(func.sum(packs.c.size), 0), func.max(packs.c.id))
            .where(packs.c.pool_id == pool_id)
        ).one()  # fmt: skip
        uuid = conn.execute(select(pools.c.uuid).where(pools.c.id == pool_id)).scalar()
        key, mark = (str(catalog.engine.url), pool_id, uuid), (n_packs, int(stored), newest)
        with _COUNTED_LOCK:
            counted = _COUNTED.get(key)
        if counted is None or counted[0] != mark:
            n_blobs, unique = conn.execute(
                select(func.count(), func.coalesce(func.sum(blobs.c.raw_length), 0)).where(blobs.c.pool_id == pool_id)
            ).one()
            counted = (mark, int(n_blobs), int(unique))
            with _COUNTED_LOCK:
                _COUNTED[key] = counted
    return {"packs": n_packs, "blobs": counted[1], "stored_bytes": int(stored), "unique_bytes": counted[2]}


_COUNTED: dict[tuple[str, int, Any], tuple[tuple[int, int, int | None], int, int]] = {}  # (catalog, pool) -> figures
_COUNTED_LOCK = threading.Lock()


def image_pool_usage(
    catalog: Catalog, pool: OpenPool | None, store: BlobStore, spool: Spool | None, zstd_level: int
) -> dict[str, Any] | None:
    """What the image pool holds and whether it answers; None while images share the file pool."""
    if pool is None:
        return None
    return {
        "uuid": pool.uuid, "kind": pool.kind, "backend": pool.backend.describe(), "zstd_level": zstd_level,
        **pool_counts(catalog, pool.id), "encrypted": pool.keys.encrypted, **store_state(store, spool),
    }  # fmt: skip


def store_state(store: BlobStore, spool: Spool | None) -> dict[str, Any]:
    """A pool's store online or offline (and why), and its write-back spool's backlog."""
    offline = store.offline or (spool.last_error if spool and not spool.online else None)
    backlog = spool.backlog() if spool else (0, 0)
    return {"state": "offline" if offline else "online", "offline_reason": offline,
            "spool_objects": backlog[0], "spool_bytes": backlog[1]}  # fmt: skip
