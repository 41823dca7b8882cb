"""Snapshots: catalog rows plus a snapshot object in the pool for each.

The snapshot object (`snapshots/<uuid>`, a blob holding JSON) carries
everything the catalog row does, so `catalog rebuild` can recreate it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Integer, cast, delete, func, insert, select

from . import nameindex
from .catalog.schema import image_versions, images, settings, snapshots, sources
from .codec import Codec
from .errors import CorruptBlob, InvalidName
from .meta import check_label

# Names the mount gives a meaning of its own under a source's snapshots/ (mount/nodes.py): a snapshot
# of that name would be hidden behind it. Compared ignoring case, as SMB and Windows clients compare names.
RESERVED = ("latest",)
COMMITTED = "committed"  # every blob is in the pool or the durable spool
STORED = "stored"  # every blob is in the pool


ImageVersion = tuple[str, int, int, bytes]  # name, size, block size, block map root


@dataclass(frozen=True)
class SnapshotInfo:
    uuid: str
    source: str
    source_uuid: str
    name: str
    root: bytes
    created: float
    files: int
    bytes: int
    state: str = STORED
    # The disk images it froze: (name, size, block size, block map root), so a catalog rebuilt
    # from the pool alone brings them back.
    images: tuple[ImageVersion, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["root"] = self.root.hex()
        doc["images"] = [[n, size, block, root.hex()] for n, size, block, root in self.images]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SnapshotInfo:
        doc = dict(doc)
        doc["root"] = bytes.fromhex(doc["root"])
        doc["images"] = tuple((str(n), int(s), int(b), bytes.fromhex(r)) for n, s, b, r in doc.get("images", ()))
        return cls(**doc)


def object_key(snapshot_uuid: str) -> str:
    return f"snapshots/{snapshot_uuid}"


def encode_object(codec: Codec, info: SnapshotInfo) -> bytes:
    doc = info.to_json()
    del doc["state"]
    return codec.encode(json.dumps(doc, sort_keys=True).encode())


def decode_object(codec: Codec, blob: bytes) -> SnapshotInfo:
    try:
        return SnapshotInfo.from_json(json.loads(codec.decode(blob)))
    except (ValueError, TypeError, KeyError) as e:
        raise CorruptBlob(f"snapshot object does not parse: {e}") from e


def new_info(source: str, source_uuid: str, name: str, root: bytes, files: int, size: int) -> SnapshotInfo:
    return SnapshotInfo(str(uuid.uuid4()), source, source_uuid, name, root, time.time(), files, size)


def check_name(name: str) -> str:
    """A name a new snapshot may take: a valid label that the mount does not reserve."""
    check_label(name, "snapshot")
    if name.lower() in RESERVED:
        raise InvalidName(f"snapshot name {name!r} is reserved: snapshots/{RESERVED[0]} always points to the newest")
    return name


def default_name(taken: set[str], now: float | None = None) -> str:
    base = time.strftime("%Y-%m-%dT%H%M%S", time.gmtime(now))
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}.{n}"
    return name


# SQLite gives the next row a deleted row's id when that one was the highest.
# Mounts number snapshot nodes by id and the kernel caches those nodes (and
# their pages) for minutes, so a snapshot id is never given out twice: the
# highest deleted id is kept, and SQLite's next id starts above it.
# PostgreSQL's sequences never go back.
HIGHEST_DELETED = "snapshots.highest_deleted_id"


def insert_row(conn: Connection, source_id: int, info: SnapshotInfo) -> None:
    values: dict[str, Any] = {
        "uuid": info.uuid, "source_id": source_id, "name": info.name, "root": info.root,
        "created": info.created, "files": info.files, "bytes": info.bytes, "state": info.state,
    }  # fmt: skip
    if conn.dialect.name == "sqlite":
        highest = select(func.coalesce(func.max(snapshots.c.id), 0)).scalar_subquery()
        deleted = select(func.coalesce(func.max(cast(settings.c.value, Integer)), 0)).where(
            settings.c.key == HIGHEST_DELETED
        )
        values["id"] = func.max(highest, deleted.scalar_subquery()) + 1
    conn.execute(snapshots.insert().values(**values))


def delete_row(conn: Connection, snapshot_uuid: str) -> None:
    """Delete a snapshot's row (its image versions first), keeping its id from being given out again."""
    row = conn.execute(select(snapshots.c.id, snapshots.c.source_id).where(snapshots.c.uuid == snapshot_uuid)).first()
    if row is None:
        return
    snapshot_id, source_id = row
    drop_images(conn, snapshot_uuid)
    conn.execute(delete(snapshots).where(snapshots.c.id == snapshot_id))
    nameindex.forget(conn, source_id, snapshot_id)
    if conn.dialect.name == "sqlite":
        stored = conn.execute(select(settings.c.value).where(settings.c.key == HIGHEST_DELETED)).scalar()
        if stored is None or int(stored) < snapshot_id:
            conn.execute(delete(settings).where(settings.c.key == HIGHEST_DELETED))
            conn.execute(insert(settings).values(key=HIGHEST_DELETED, value=str(snapshot_id)))


def _select() -> Any:
    return select(
        snapshots.c.uuid, sources.c.name, sources.c.uuid, snapshots.c.name, snapshots.c.root,
        snapshots.c.created, snapshots.c.files, snapshots.c.bytes, snapshots.c.state,
    ).join(sources, sources.c.id == snapshots.c.source_id)  # fmt: skip


def _info(row: Any) -> SnapshotInfo:
    return SnapshotInfo(row[0], row[1], row[2], row[3], bytes(row[4]), row[5], row[6], row[7], row[8])


def list_rows(conn: Connection, source: str | None = None) -> list[SnapshotInfo]:
    q = _select().order_by(snapshots.c.created, snapshots.c.id)
    if source is not None:
        q = q.where(sources.c.name == source)
    return [_info(r) for r in conn.execute(q)]


def list_numbered(conn: Connection, source: str) -> list[tuple[int, SnapshotInfo]]:
    """A source's snapshots with their row ids, oldest first."""
    q = _select().add_columns(snapshots.c.id).where(sources.c.name == source)
    return [(row[-1], _info(row)) for row in conn.execute(q.order_by(snapshots.c.created, snapshots.c.id))]


def find_row(conn: Connection, source: str, name: str) -> SnapshotInfo | None:
    row = conn.execute(_select().where(sources.c.name == source, snapshots.c.name == name)).first()
    return None if row is None else _info(row)


def source_images(conn: Connection, source_id: int) -> tuple[ImageVersion, ...]:
    """A source's disk images as they are now, for a snapshot to keep."""
    q = select(images.c.name, images.c.size, images.c.block_size, images.c.root).where(images.c.source_id == source_id)
    return tuple((r[0], r[1], r[2], bytes(r[3])) for r in conn.execute(q.order_by(images.c.name)))


def frozen_images(conn: Connection, snapshot_uuid: str) -> tuple[ImageVersion, ...]:
    """The images a snapshot froze, as `source_images` lists a source's."""
    sid = select(snapshots.c.id).where(snapshots.c.uuid == snapshot_uuid).scalar_subquery()
    q = select(image_versions.c.name, image_versions.c.size, image_versions.c.block_size, image_versions.c.root)
    rows = conn.execute(q.where(image_versions.c.snapshot_id == sid).order_by(image_versions.c.name))
    return tuple((r[0], r[1], r[2], bytes(r[3])) for r in rows)


def freeze_images(conn: Connection, info: SnapshotInfo) -> None:
    """The snapshot's image versions, as its object lists them (in the snapshot's own transaction)."""
    sid = conn.execute(select(snapshots.c.id).where(snapshots.c.uuid == info.uuid)).scalar_one()
    rows = [{"snapshot_id": sid, "name": n, "size": size, "block_size": block, "root": root}
            for n, size, block, root in info.images]  # fmt: skip
    if rows:
        conn.execute(insert(image_versions), rows)


def drop_images(conn: Connection, snapshot_uuid: str) -> None:
    """Forget the image versions of a snapshot that is being deleted."""
    sid = select(snapshots.c.id).where(snapshots.c.uuid == snapshot_uuid).scalar_subquery()
    conn.execute(delete(image_versions).where(image_versions.c.snapshot_id == sid))
