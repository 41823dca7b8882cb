"""The image pool on a backend of its own: creating it, opening it, and what it holds.

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
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, or_, select

from .catalog import Catalog
from .catalog.schema import blobs, image_versions, images, keys, leases, packs, pools
from .codec import CodecConfig
from .errors import Exists, InUse, NotEmpty, ObjectNotFound, PoolMismatch
from .ids import HOLE
from .keyring import DeploymentKeys
from .leases import dead_here
from .pool import STRUCTURE, OpenPool, check_identity, key_rows, write_pool
from .storage import Backend, open_backend
from .storage.filter import find_layer
from .storage.spool import Spool

if TYPE_CHECKING:
    from .deployment import Deployment

IMAGE = "image"
NOTE = "image-pool.json"


def open_image_pool(catalog: Catalog, data_dir: Path, deployment_keys: DeploymentKeys) -> OpenPool | None:
    """The deployment's image pool if it has one of its own (checked as the file pool is), else None."""
    with catalog.engine.connect() as conn:
        row = conn.execute(select(pools).where(pools.c.kind == IMAGE)).first()
    if row is None:
        return None
    backend = _backend(json.loads(row.backend), data_dir)
    check_identity(backend, row.uuid)
    return OpenPool(row.id, row.uuid, IMAGE, backend, deployment_keys, CodecConfig.from_json(row.codec))


def _backend(config: dict[str, Any], data_dir: Path) -> Backend:
    # This machine's read cache and write-back spool of the image pool: apart from the file pool's.
    return open_backend(config, cache_dir=data_dir / "cache" / IMAGE, spool_dir=data_dir / "writeback" / IMAGE)


def create_image_pool(dep: Deployment, config: dict[str, Any]) -> str:
    """Give the deployment an image pool on the backend `config` describes.

    Returns its uuid. It takes effect when the deployment is next opened. Refused once an image
    holds blocks in the file pool (they would not be found in the new pool),
    and while another process writes to the deployment (it would go on
    storing blocks in the file pool until it restarts).
    """
    with dep.catalog.engine.connect() as conn:
        if conn.execute(select(pools.c.id).where(pools.c.kind == IMAGE)).first():
            raise Exists("the deployment has an image pool already")
        _refuse_stored_images(conn)
        _refuse_other_writers(conn, dep.owner)
        rows = {r[0]: bytes(r[1]) for r in conn.execute(select(keys.c.purpose, keys.c.material))}
    # The same key rows as the file pool's (wrapped keys, or the plain id key): no unlock needed.
    rows = {k: v for k, v in rows.items() if k in ("deployment", "id")} or key_rows(dep.pool.keys, dep.backend)
    backend = _backend(config, dep.data_dir)
    try:
        identity = write_pool(backend, IMAGE, rows)
    finally:
        spool = find_layer(backend, Spool)
        if spool is not None:
            spool.close()  # what it queued drains when the deployment opens the image pool
    dep.backend.put(NOTE, json.dumps({"uuid": identity.uuid, "backend": backend.describe()}).encode())
    with dep.catalog.engine.begin() as conn:
        _refuse_stored_images(conn)  # again, in the transaction that adds the row
        conn.execute(
            pools.insert().values(
                uuid=identity.uuid, kind=IMAGE, backend=json.dumps(config), structure=STRUCTURE,
                created=identity.created, codec=dep.codec.config.to_json(),
            ),
        )  # fmt: skip
    return identity.uuid


def image_pool_note(file_pool: Backend) -> dict[str, str] | None:
    """The file pool's note of the deployment's image pool (uuid, backend described), if it has one."""
    try:
        doc = json.loads(file_pool.get(NOTE))
    except ObjectNotFound:
        return None
    except ValueError as e:
        raise PoolMismatch(f"{NOTE} at {file_pool.describe()} is not valid JSON") from e
    return {"uuid": str(doc.get("uuid")), "backend": str(doc.get("backend"))}


def _refuse_stored_images(conn: Connection) -> None:
    stored = or_(
        select(images.c.id).where(images.c.root != HOLE).exists(),
        select(image_versions.c.id).where(image_versions.c.root != HOLE).exists(),
    )
    if conn.execute(select(stored)).scalar():
        raise NotEmpty(
            "disk images already hold blocks in the file pool, and they are not moved: "
            "an image pool can only be created before the first image is written"
        )


def _refuse_other_writers(conn: Connection, owner: str) -> None:
    now = time.time()
    for holder, expires in conn.execute(select(leases.c.owner, leases.c.expires).where(leases.c.owner != owner)):
        if expires > now and not dead_here(holder):
            raise InUse(f"process {holder} writes to the deployment (cairn serve?): stop it first")


def pool_counts(catalog: Catalog, pool_id: int) -> dict[str, int]:
    """A pool's packs, blobs, stored bytes (packs) and unique bytes (blobs before the codecs)."""
    with catalog.engine.connect() as conn:
        n_packs, stored = conn.execute(
            select(func.count(), func.coalesce(func.sum(packs.c.size), 0)).where(packs.c.pool_id == pool_id)
        ).one()
        n_blobs, unique = conn.execute(
            select(func.count(), func.coalesce(func.sum(blobs.c.raw_length), 0)).where(blobs.c.pool_id == pool_id)
        ).one()
    return {"packs": n_packs, "blobs": n_blobs, "stored_bytes": int(stored), "unique_bytes": int(unique)}


def image_pool_usage(dep: Deployment) -> dict[str, Any] | None:
    """What the image pool holds and whether it answers; None while images share the file pool."""
    pool = dep.image_pool
    if pool is None:
        return None
    spool = dep.image_spool
    offline = dep.image_blobs.offline or (spool.last_error if spool and not spool.online else None)
    backlog = spool.backlog() if spool else (0, 0)
    return {
        "uuid": pool.uuid, "kind": pool.kind, "backend": pool.backend.describe(), "zstd_level": dep.codec.config.level,
        **pool_counts(dep.catalog, pool.id), "encrypted": pool.keys.encrypted,
        "state": "offline" if offline else "online", "offline_reason": offline,
        "spool_objects": backlog[0], "spool_bytes": backlog[1],
    }  # fmt: skip
