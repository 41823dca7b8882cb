"""Garbage collection: mark what snapshots and working trees use, delete the rest, repack sparse packs.

Each pool is swept with its own blob store: the file pool, and the image
pool where the deployment has one of its own (its blocks, patches and map
nodes are marked from the images' roots alone).

It runs while backups write. Marking reads the catalog after committing the
working trees; what writers put but reference nowhere yet is kept by the
blob store's record of blobs in flight (inflight.py). Dead blobs leave the
known set before their pack is rewritten, so a later put of the same data
stores it anew instead of trusting a pack that is going away.

Order per batch of packs, so that a crash at any point loses nothing:
forget the dead blobs, write the new pack (the live blobs, copied verbatim
after a hash check), then one catalog transaction (new pack row, moved blob
rows, dead rows and old pack rows gone), and only then delete the old packs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Connection, bindparam, delete, func, select, update

from . import leases
from .blobstore import BlobStore
from .blockmap import mark_maps
from .catalog import Catalog
from .catalog.schema import blobs, image_versions, images, inodes, packs, snapshots, sources
from .content import packed_ids
from .errors import CorruptBlob
from .meta import Kind
from .packs import PACK_TARGET, PATCH, PackBuilder, pack_key
from .tree import deserialize

if TYPE_CHECKING:
    from .deployment import Deployment

REPACK_BELOW = 0.5  # a pack with less than half its bytes live is rewritten
LAST_GC = "pool.last_gc"


@dataclass
class GcReport:
    packs: int = 0  # packs examined
    pack_bytes: int = 0  # their bytes
    live_blobs: int = 0
    dead_blobs: int = 0
    kept_blobs: int = 0  # dead by marking, but a backup used them meanwhile
    packs_deleted: int = 0
    packs_written: int = 0
    bytes_freed: int = 0
    seconds: float = 0.0
    dry_run: bool = False


@dataclass
class _Pack:
    id: int
    name: str
    size: int
    blobs: list[tuple[bytes, int, int, int, int]] = field(default_factory=list)  # id, offset, length, raw, kind


def collect(
    dep: Deployment,
    *,
    repack_below: float = REPACK_BELOW,
    dry_run: bool = False,
    progress: Callable[[GcReport], None] | None = None,
) -> GcReport:
    """Collect the garbage of the file pool (and of the image pool, if it has its own store).

    Safe while this process's working trees take writes.
    """
    report = GcReport(dry_run=dry_run)
    start = time.monotonic()
    with contextlib.ExitStack() as held:
        for store in dep.stores:
            held.enter_context(store.inflight.collecting())
        held.enter_context(_leased(dep))
        dep.flush()
        dep.commit()  # working trees' rows are what marking reads
        # Only packs that exist now: blobs stored from here on are new, and marking cannot see them.
        last = {store.pool_id: _last_pack(dep.catalog, store.pool_id) for store in dep.stores}
        if dep.image_blobs is dep.blobs:
            live = {dep.pool.id: mark(dep.catalog, dep.pool.id, dep.blobs.get)}
        else:  # each pool keeps what its own blobs are referenced by
            live = {dep.blobs.pool_id: mark_files(dep.catalog, dep.blobs.get)}
            live[dep.image_blobs.pool_id] = mark_images(dep.catalog, dep.image_blobs.pool_id, dep.image_blobs.get)
        report.live_blobs = sum(len(ids) for ids in live.values())
        for store in dep.stores:
            _collect_pool(dep, store, live[store.pool_id], last[store.pool_id], report, repack_below, dry_run, progress)
    report.seconds = time.monotonic() - start
    if not dry_run:
        dep.catalog.set_setting(LAST_GC, json.dumps({"finished": time.time(), **dataclasses.asdict(report)}))
    if progress is not None:
        progress(report)
    return report


def _last_pack(catalog: Catalog, pool_id: int) -> int:
    with catalog.engine.connect() as conn:
        return conn.execute(select(func.max(packs.c.id)).where(packs.c.pool_id == pool_id)).scalar() or 0


def _collect_pool(
    dep: Deployment, store: BlobStore, live: set[bytes], last: int, report: GcReport, repack_below: float,
    dry_run: bool, progress: Callable[[GcReport], None] | None,
) -> None:  # fmt: skip
    """Sweep one pool's packs up to id `last`: what `live` lacks goes."""
    batch: list[_Pack] = []
    for pack in _packs(dep.catalog, store.pool_id, last):
        report.packs += 1
        report.pack_bytes += pack.size
        dead = sum(1 for b in pack.blobs if b[0] not in live)
        live_bytes = sum(b[2] for b in pack.blobs if b[0] in live)
        if pack.blobs and (not dead or live_bytes >= repack_below * pack.size):
            continue  # all live, or live enough to leave as it is
        report.dead_blobs += dead
        batch.append(pack)
        if sum(p.size for p in batch) >= PACK_TARGET * 4:
            _sweep(store, batch, live, report, dry_run)
            batch = []
            with dep.catalog.engine.begin() as conn:
                leases.renew(conn, dep.owner)
            if progress is not None:
                progress(report)
    if batch:
        _sweep(store, batch, live, report, dry_run)


def last_gc(catalog: Catalog) -> dict[str, object] | None:
    """The last collection's report and when it finished (the UI shows it)."""
    value = catalog.setting(LAST_GC)
    return json.loads(value) if value else None


def mark(catalog: Catalog, pool_id: int, get: Callable[[bytes], bytes]) -> set[bytes]:
    """Every blob a snapshot, a working tree or a disk image (writable or frozen) refers to, all in one pool."""
    live = mark_files(catalog, get)
    return mark_images(catalog, pool_id, get, live)


def mark_files(catalog: Catalog, get: Callable[[bytes], bytes]) -> set[bytes]:
    """Every tree and chunk a snapshot or a working tree refers to (file pool blobs)."""
    live: set[bytes] = set()
    todo: list[bytes] = []
    with catalog.engine.connect() as conn:
        todo += [bytes(r[0]) for r in conn.execute(select(snapshots.c.root))]
        for content, tree_id in conn.execute(select(inodes.c.content, inodes.c.tree_id)):
            if content:
                live.update(packed_ids(bytes(content)))
            if tree_id is not None:
                todo.append(bytes(tree_id))
    while todo:
        tree_id = todo.pop()
        if tree_id in live:
            continue
        try:
            entries = deserialize(get(tree_id))
        except CorruptBlob as e:
            raise CorruptBlob(f"garbage collection cannot read a tree ({e}); run `cairn pool check`") from e
        live.add(tree_id)
        for entry in entries:
            if entry.kind == Kind.FILE:
                live.update(packed_ids(entry.payload))
            elif entry.kind == Kind.DIR and entry.payload not in live:
                todo.append(entry.payload)
    return live


def mark_images(
    catalog: Catalog, pool_id: int, get: Callable[[bytes], bytes], live: set[bytes] | None = None
) -> set[bytes]:
    """Every map node, block and patch base of a disk image (writable or frozen), added to `live`.

    `pool_id` is the pool that holds the images' blobs; `get` reads them.
    """
    live = set() if live is None else live
    with catalog.engine.connect() as conn:
        maps = [bytes(r[0]) for r in conn.execute(select(images.c.root).union(select(image_versions.c.root)))]
        # Patched blocks, whose bases marking keeps: the only blobs it reads that are not trees or map nodes.
        patched = select(blobs.c.id).where(blobs.c.pool_id == pool_id, blobs.c.kind == PATCH)
        patches = {bytes(r[0]) for r in conn.execute(patched)}
    try:
        mark_maps(maps, get, live, patches)
    except CorruptBlob as e:
        raise CorruptBlob(f"garbage collection cannot read a block map ({e}); run `cairn pool check`") from e
    return live


def _packs(catalog: Catalog, pool_id: int, last: int) -> Iterator[_Pack]:
    """Every pack of the pool up to id `last`, with its blobs, one pack at a time."""
    query = (
        select(packs.c.id, packs.c.name, packs.c.size, blobs.c.id, blobs.c.offset, blobs.c.length,
               blobs.c.raw_length, blobs.c.kind)
        .join(blobs, blobs.c.pack_id == packs.c.id, isouter=True)
        .where(packs.c.pool_id == pool_id, packs.c.id <= last)
        .order_by(packs.c.id)
    )  # fmt: skip
    current: _Pack | None = None
    with catalog.engine.connect() as conn:
        for row in conn.execute(query):
            if current is None or current.id != row[0]:
                if current is not None:
                    yield current
                current = _Pack(row[0], row[1], row[2])
            if row[3] is not None:
                current.blobs.append((bytes(row[3]), row[4], row[5], row[6], row[7]))
    if current is not None:
        yield current


def _sweep(store: BlobStore, batch: list[_Pack], live: set[bytes], report: GcReport, dry_run: bool) -> None:
    dead = {b[0] for p in batch for b in p.blobs if b[0] not in live}
    if dry_run:
        report.bytes_freed += sum(b[2] for p in batch for b in p.blobs if b[0] in dead)
        return
    dropped = store.forget(dead)
    report.kept_blobs += len(dead) - len(dropped)
    # A pack that loses nothing (its dead blobs are in flight again) stays as it is.
    batch = [p for p in batch if not p.blobs or any(b[0] in dropped for b in p.blobs)]
    if not batch:
        return
    new = _rewrite(store, batch, dropped)
    with store.catalog.engine.begin() as conn:
        if new is not None:
            _move(store, conn, *new)
        gone, old = list(dropped), [p.id for p in batch]
        for i in range(0, len(gone), 500):
            # Only rows still in these packs: a backup may have stored a dropped blob again meanwhile.
            conn.execute(delete(blobs).where(
                blobs.c.pool_id == store.pool_id, blobs.c.id.in_(gone[i : i + 500]), blobs.c.pack_id.in_(old)
            ))  # fmt: skip
        conn.execute(delete(packs).where(packs.c.id.in_([p.id for p in batch])))
    for pack in batch:
        store.backend.delete(pack_key(pack.name))
    report.packs_deleted += len(batch)
    report.packs_written += new is not None
    report.bytes_freed += sum(p.size for p in batch) - (len(new[1]) if new else 0)


def _rewrite(store: BlobStore, batch: list[_Pack], dropped: set[bytes]) -> tuple[str, bytes, PackBuilder] | None:
    """Store one new pack holding the batch's blobs that stay; None if none stay."""
    builder = PackBuilder()
    for pack in batch:
        keep = [b for b in pack.blobs if b[0] not in dropped]
        if not keep:
            continue
        data = store.backend.get(pack_key(pack.name))
        for blob_id, offset, length, raw_length, kind in keep:
            blob = data[offset : offset + length]
            store.decode_checked(blob_id, blob, pack.name)  # copy nothing damaged
            builder.add(blob_id, kind, (blob, b""), raw_length)
    if not builder.entries:
        return None
    name, data = builder.seal(store.codec)
    if name in {p.name for p in batch}:  # cannot happen: every pack of the batch lost a blob
        raise CorruptBlob(f"repacking would overwrite pack {name}")
    store.backend.put(pack_key(name), data)
    return name, data, builder


def _move(store: BlobStore, conn: Connection, name: str, data: bytes, builder: PackBuilder) -> None:
    """Point the moved blobs' rows at their new pack."""
    row = {"pool_id": store.pool_id, "name": name, "size": len(data),
           "blob_count": len(builder.entries), "created": time.time()}  # fmt: skip
    store.catalog.insert_ignore(conn, packs, [row])  # a pack of these very bytes may exist already
    named = select(packs.c.id).where(packs.c.pool_id == store.pool_id, packs.c.name == name)
    pack_id = conn.execute(named).scalar_one()
    move = (
        update(blobs)
        .where(blobs.c.pool_id == bindparam("b_pool"), blobs.c.id == bindparam("b_id"))
        .values(pack_id=bindparam("b_pack"), offset=bindparam("b_offset"), length=bindparam("b_length"))
    )
    rows = [{"b_pool": store.pool_id, "b_id": e.blob_id, "b_pack": pack_id, "b_offset": e.offset,
             "b_length": e.length} for e in builder.entries]  # fmt: skip
    store.catalog.executemany(conn, move, rows)


class _leased:
    """Hold every source's lease while collecting: no other process may write meanwhile."""

    def __init__(self, dep: Deployment):
        self.dep = dep
        self.taken: list[int] = []

    def __enter__(self) -> None:
        self.taken = self.dep.worktrees.waiting_for_leases(self._take)

    def _take(self) -> list[int]:
        taken = []
        with self.dep.catalog.engine.begin() as conn:  # all or none: InUse if another process writes one
            for sid, name in conn.execute(select(sources.c.id, sources.c.name)).all():
                leases.acquire(conn, sid, name, self.dep.owner)
                taken.append(sid)
        return taken

    def __exit__(self, *exc: object) -> None:
        held = set(self.dep.loaded_source_ids())
        with self.dep.catalog.engine.begin() as conn:
            for sid in self.taken:
                if sid not in held:
                    leases.release_source(conn, sid, self.dep.owner)
