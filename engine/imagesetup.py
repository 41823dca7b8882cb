"""Creating a deployment's image pool on a backend of its own (what it is: imagestore.py)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, or_, select

from .catalog.schema import image_versions, images, keys, leases, pools
from .errors import Exists, InUse, NotEmpty
from .ids import HOLE
from .imagestore import IMAGE, NOTE
from .leases import held
from .pool import STRUCTURE, backend_for, key_rows, write_pool
from .storage.filter import find_layer
from .storage.spool import Spool

if TYPE_CHECKING:
    from .deployment import Deployment


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
    backend = backend_for(config, dep.data_dir, IMAGE)
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
        if held(holder, expires, now):
            raise InUse(f"process {holder} writes to the deployment (cairn serve?): stop it first")
