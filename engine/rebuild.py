"""`catalog rebuild`: recreate the catalog from the pool alone (and the image pool, if it has its own).

Packs describe their blobs, snapshot objects describe their snapshots, and
each source's working tree is seeded from its latest snapshot so the next
rsync is incremental again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

from .catalog import Catalog
from .catalog.schema import blobs, dirents, images, inodes, keys, packs, pools, sources
from .codec import Codec
from .errors import BackendError, CorruptBlob, InvalidArgument, PoolMismatch
from .ids import IdKey
from .imagestore import image_pool_note
from .keyring import Unlock
from .meta import Kind
from .packs import FOOTER, index_length, read_index
from .pool import STRUCTURE, PoolIdentity, keys_of, pool_keys, read_identity
from .reader import SnapshotView, TreeCache
from .snapshots import SnapshotInfo, decode_object, freeze_images, insert_row
from .storage import Backend
from .tree import Entry

log = logging.getLogger(__name__)
_TAIL = 64 << 10  # most pack indexes fit in the last 64 KiB: one ranged GET


@dataclass
class RebuildReport:
    packs: int = 0
    blobs: int = 0
    snapshots: int = 0
    sources: int = 0
    problems: list[str] = field(default_factory=list)
    image_pool: dict[str, str] | None = None  # the file pool's note of an image pool of its own


def rebuild(
    catalog: Catalog,
    backend: Backend,
    backend_config: dict[str, Any],
    progress: Callable[[RebuildReport], None] | None = None,
    unlock: Unlock | None = None,
) -> RebuildReport:
    """Fill an empty catalog from the pool in `backend`."""
    with catalog.engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(pools)).scalar():
            raise InvalidArgument("the catalog is not empty; rebuild needs a new one")
    identity = read_identity(backend)
    if identity.kind != "file":
        raise InvalidArgument(f"{backend.describe()} is an {identity.kind} pool; rebuild from the file pool")
    found, key_material = pool_keys(backend, unlock)
    codec = Codec(keys=found)
    report = RebuildReport()
    with catalog.engine.begin() as conn:
        pool_id = _insert_pool(conn, identity, backend_config)
        for purpose, material in key_material.items():
            conn.execute(keys.insert().values(purpose=purpose, material=material))
    _index_packs(catalog, backend, codec, pool_id, report, progress)
    report.image_pool = image_pool_note(backend)
    infos = []
    for key, _ in backend.list("snapshots/"):
        try:
            infos.append(decode_object(codec, backend.get(key)))
        except (CorruptBlob, BackendError) as e:
            report.problems.append(f"{key}: {e}")
    _restore_snapshots(catalog, infos, report)
    _seed_working_trees(catalog, pool_id, backend, IdKey(found.id_key), codec, infos)
    return report


def rebuild_image_pool(
    catalog: Catalog,
    backend: Backend,
    backend_config: dict[str, Any],
    progress: Callable[[RebuildReport], None] | None = None,
    unlock: Unlock | None = None,
    expected: str | None = None,
) -> RebuildReport:
    """Add the image pool in `backend` to a catalog just rebuilt from the file pool: its row and blob index.

    The images' rows come from the snapshot objects in the file pool; their blocks are found here.
    `expected` is the uuid the file pool's note names, if it has one.
    """
    with catalog.engine.connect() as conn:
        kinds = {r[0]: r[1] for r in conn.execute(select(pools.c.kind, pools.c.id))}
        rows = {r[0]: bytes(r[1]) for r in conn.execute(select(keys.c.purpose, keys.c.material))}
    if "file" not in kinds or "image" in kinds:
        raise InvalidArgument("rebuild the catalog from the file pool first, then add its image pool once")
    identity = read_identity(backend)
    if identity.kind != "image":
        raise InvalidArgument(f"{backend.describe()} is a {identity.kind} pool, not an image pool")
    if expected is not None and identity.uuid != expected:
        raise PoolMismatch(f"{backend.describe()} is image pool {identity.uuid}; the file pool names {expected}")
    found, its_rows = pool_keys(backend, unlock)
    # The same wrapped key file needs no second unwrapping (a passphrase costs ~0.1 s).
    if not its_rows.items() <= rows.items() and found.id_key != keys_of(rows, backend, unlock).id_key:
        raise PoolMismatch(f"the image pool at {backend.describe()} belongs to another deployment")
    report = RebuildReport()
    with catalog.engine.begin() as conn:
        pool_id = _insert_pool(conn, identity, backend_config)
    _index_packs(catalog, backend, Codec(keys=found), pool_id, report, progress)
    return report


def _insert_pool(conn: Connection, identity: PoolIdentity, backend_config: dict[str, Any]) -> int:
    """The pool's catalog row, as its identification file describes it."""
    return Catalog.insert_id(conn, pools.insert().values(
        uuid=identity.uuid, kind=identity.kind, backend=json.dumps(backend_config),
        structure=STRUCTURE, created=identity.created,
    ))  # fmt: skip


def _index_packs(
    catalog: Catalog, backend: Backend, codec: Codec, pool_id: int, report: RebuildReport,
    progress: Callable[[RebuildReport], None] | None,
) -> None:  # fmt: skip
    """Index every pack of the pool: its blobs, as its own index at its tail describes them."""
    for key, size in backend.list("packs/"):
        try:
            _index_pack(catalog, backend, codec, pool_id, key, size, report)
        except (CorruptBlob, BackendError) as e:
            report.problems.append(f"{key}: {e}")
        if progress is not None:
            progress(report)


def _index_pack(
    catalog: Catalog, backend: Backend, codec: Codec, pool_id: int, key: str, size: int, report: RebuildReport
) -> None:
    name = key.rsplit("/", 1)[-1]
    start = max(0, size - _TAIL)
    tail = backend.get(key, start, size - start)
    if len(tail) < FOOTER.size:
        raise CorruptBlob("pack too short")
    need = index_length(tail)
    if need > len(tail):
        start = size - need
        tail = backend.get(key, start, need)
    entries = read_index(codec, tail, size)
    with catalog.engine.begin() as conn:
        pack_id = Catalog.insert_id(
            conn,
            packs.insert().values(pool_id=pool_id, name=name, size=size, blob_count=len(entries), created=time.time()),
        )
        rows = [
            {"pool_id": pool_id, "id": e.blob_id, "pack_id": pack_id, "offset": e.offset,
             "length": e.length, "raw_length": e.raw_length, "kind": e.kind}
            for e in entries
        ]  # fmt: skip
        catalog.insert_ignore(conn, blobs, rows)
    report.packs += 1
    report.blobs += len(entries)


def _restore_snapshots(catalog: Catalog, infos: list[SnapshotInfo], report: RebuildReport) -> None:
    with catalog.engine.begin() as conn:
        ids: dict[str, int] = {}
        for info in sorted(infos, key=lambda i: i.created):
            sid = ids.get(info.source_uuid)
            if sid is None:
                sid = Catalog.insert_id(
                    conn,
                    sources.insert().values(uuid=info.source_uuid, name=info.source, created=info.created, next_ino=2),
                )
                ids[info.source_uuid] = sid
                report.sources += 1
            insert_row(conn, sid, info)
            freeze_images(conn, info)
            report.snapshots += 1
        latest = {i.source_uuid: i for i in sorted(infos, key=lambda i: i.created)}
        for info in latest.values():  # the sources' disk images: as their newest snapshot froze them
            rows = [{"source_id": ids[info.source_uuid], "name": n, "size": size, "block_size": block,
                     "root": root, "changed": info.created} for n, size, block, root in info.images]  # fmt: skip
            if rows:
                conn.execute(images.insert(), rows)


def _seed_working_trees(
    catalog: Catalog, pool_id: int, backend: Backend, id_key: IdKey, codec: Codec, infos: list[SnapshotInfo]
) -> None:
    from .blobstore import BlobStore

    store = BlobStore(catalog, pool_id, backend, id_key, codec)
    try:
        trees = TreeCache(store)
        latest: dict[str, SnapshotInfo] = {}
        for info in sorted(infos, key=lambda i: i.created):
            latest[info.source_uuid] = info
        for info in latest.values():
            try:
                _seed(catalog, SnapshotView(trees, info.root), info)
            except (CorruptBlob, BackendError) as e:
                log.warning("working tree of %s not seeded: %s", info.source, e)
    finally:
        store.close()


def _seed(catalog: Catalog, view: SnapshotView, info: SnapshotInfo) -> None:
    with catalog.engine.begin() as conn:
        sid = conn.execute(select(sources.c.id).where(sources.c.uuid == info.source_uuid)).scalar_one()
        rows: dict[int, dict[str, Any]] = {1: _row(sid, view.root, 1)}
        names = []
        stack = [(1, view.root)]
        while stack:
            parent, entry = stack.pop()
            for child in view.listing(entry).values():
                rows.setdefault(child.ino, _row(sid, child, child.ino))
                names.append({"source_id": sid, "parent": parent, "name": child.name, "ino": child.ino})
                if child.kind == Kind.DIR:
                    stack.append((child.ino, child))
        conn.execute(inodes.insert(), list(rows.values()))
        if names:
            conn.execute(dirents.insert(), names)
        conn.execute(sources.update().where(sources.c.id == sid).values(next_ino=max(rows) + 1))


def _row(sid: int, e: Entry, ino: int) -> dict[str, Any]:
    return {
        "source_id": sid, "ino": ino, "kind": e.kind, "mode": e.mode, "uid": e.uid, "gid": e.gid,
        "rdev": e.rdev, "size": e.size, "atime_ns": e.atime_ns, "mtime_ns": e.mtime_ns,
        "ctime_ns": e.ctime_ns, "nlink": e.nlink, "origin": 0,
        "target": e.payload if e.kind == Kind.SYMLINK else None,
        "content": e.payload if e.kind == Kind.FILE and e.payload else None,
        "xattrs": _xattrs(e), "tree_id": e.payload if e.kind == Kind.DIR else None, "pending": False,
    }  # fmt: skip


def _xattrs(e: Entry) -> bytes | None:
    from .worktree.inode import pack_xattrs

    return pack_xattrs(dict(e.xattrs)) if e.xattrs else None
