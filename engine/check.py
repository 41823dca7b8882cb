"""Pool scrub: read every pack, verify every blob, and say what a damaged blob affects.

Also: which file system holds a local pool (ZFS and btrfs checksum the disks
beneath on their own scrub), and the connectivity check a pool passes on
every open, on demand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import blake3
from sqlalchemy import func, select

from .blobstore import BlobStore
from .catalog import Catalog
from .catalog.schema import blobs as blob_rows
from .catalog.schema import packs
from .content import packed_ids
from .errors import BackendError, CorruptBlob
from .hostmounts import filesystem_of
from .meta import Kind
from .packs import pack_key
from .reader import TreeCache, root_entry
from .snapshots import SnapshotInfo
from .tree import Entry

if TYPE_CHECKING:
    from .deployment import Deployment


PACKS = "packs/"
MISSING = "the pack is missing from the pool"


@dataclass
class Damage:
    blob_id: bytes
    pack: str
    problem: str
    affects: list[tuple[str, str, str]] = field(default_factory=list)  # (source, snapshot, path)


@dataclass
class CheckReport:
    packs: int = 0
    blobs: int = 0
    bytes: int = 0
    total_bytes: int = 0  # of every pack to read, where known (a scrub's progress bar)
    damage: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damage


Progress = Callable[[CheckReport], None]


def check_pool(store: BlobStore, progress: Progress | None = None, report: CheckReport | None = None) -> CheckReport:
    """Read every pack of the store's pool and verify its blobs; adds to `report` if one is given."""
    report = CheckReport() if report is None else report
    with store.catalog.engine.connect() as conn:
        pack_list = conn.execute(
            select(packs.c.id, packs.c.name, packs.c.size).where(packs.c.pool_id == store.pool_id)
        ).all()
    for pack_id, name, size in pack_list:
        with store.catalog.engine.connect() as conn:
            rows = conn.execute(
                select(blob_rows.c.id, blob_rows.c.offset, blob_rows.c.length).where(blob_rows.c.pack_id == pack_id)
            ).all()
        report.packs += 1
        for blob_id, problem in _check_pack(store, name, [(bytes(r[0]), r[1], r[2]) for r in rows]):
            report.damage.append(Damage(blob_id, name, problem))
        report.blobs += len(rows)
        report.bytes += size
        if progress is not None:
            progress(report)
    return report


def missing_packs(store: BlobStore) -> list[Damage]:
    """What the catalog says is in packs that the pool's listing lacks: a Damage per blob of each.

    One listing of the pool and two catalog queries, no pack read: cheap
    enough for every `pool check`.
    """
    listed = {key.rsplit("/", 1)[-1] for key, _ in store.backend.list(PACKS)}
    with store.catalog.engine.connect() as conn:
        known = conn.execute(select(packs.c.id, packs.c.name).where(packs.c.pool_id == store.pool_id)).all()
        gone = {pack_id: name for pack_id, name in known if name not in listed}
        found: list[Damage] = []
        ids = list(gone)
        for i in range(0, len(ids), 500):
            rows = conn.execute(
                select(blob_rows.c.id, blob_rows.c.pack_id).where(blob_rows.c.pack_id.in_(ids[i : i + 500]))
            ).all()
            found += [Damage(bytes(blob_id), gone[pack_id], MISSING) for blob_id, pack_id in rows]
    empty = set(gone.values()) - {d.pack for d in found}
    return found + [Damage(b"", name, MISSING) for name in sorted(empty)]


def missing_doc(damage: list[Damage]) -> list[dict[str, Any]]:
    """Missing packs as JSON, one entry per pack: how many blobs it held and the paths they belong to."""
    blobs: dict[str, int] = {}
    affects: dict[str, list[dict[str, str]]] = {}
    for d in damage:
        blobs[d.pack] = blobs.get(d.pack, 0) + (1 if d.blob_id else 0)
        seen = affects.setdefault(d.pack, [])
        for s, n, p in d.affects:
            where = {"source": s, "snapshot": n, "path": p}
            if where not in seen:
                seen.append(where)
    return [{"pack": pack, "blobs": n, "affects": affects[pack]} for pack, n in blobs.items()]


def _check_pack(store: BlobStore, name: str, rows: list[tuple[bytes, int, int]]) -> Iterator[tuple[bytes, str]]:
    try:
        data = store.backend.get(pack_key(name))
    except BackendError as e:
        for blob_id, _, _ in rows:
            yield blob_id, f"pack cannot be read: {e}"
        return
    if blake3.blake3(data).hexdigest() != name:
        yield b"", "pack bytes do not match the pack's name"
    for blob_id, offset, length in rows:
        try:
            store.decode_checked(blob_id, data[offset : offset + length], name)
        except CorruptBlob as e:
            yield blob_id, str(e)


def locate(trees: TreeCache, snapshot_list: list[SnapshotInfo], damage: list[Damage]) -> None:
    """Fill in which source, snapshot and path each damaged blob affects."""
    bad = {d.blob_id: d for d in damage if d.blob_id}
    if not bad:
        return
    clean: set[bytes] = set()
    for info in snapshot_list:
        if info.root in bad:
            bad[info.root].affects.append((info.source, info.name, "/"))
            continue
        try:
            root = root_entry(trees, info.root)
        except CorruptBlob:
            continue
        _walk(trees, root, b"", info, bad, clean)


def _walk(
    trees: TreeCache, entry: Entry, path: bytes, info: SnapshotInfo, bad: dict[bytes, Damage], clean: set[bytes]
) -> bool:
    """Whether anything below `entry` is damaged; trees found clean are skipped after."""
    tree_id = entry.payload
    if tree_id in clean:
        return False
    if tree_id in bad:
        bad[tree_id].affects.append((info.source, info.name, _show(path) + "/"))
        return True
    found = False
    for child in trees.get(tree_id).values():
        child_path = path + b"/" + child.name
        if child.kind == Kind.DIR:
            found |= _walk(trees, child, child_path, info, bad, clean)
        elif child.kind == Kind.FILE:
            for blob_id in packed_ids(child.payload):
                if blob_id in bad:
                    bad[blob_id].affects.append((info.source, info.name, _show(child_path)))
                    found = True
    if not found:
        clean.add(tree_id)
    return found


def _show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace") or "/"


def describe(d: dict[str, Any]) -> str:
    """One line for one entry of `damage_doc` (what the CLI prints, locally and from a remote's job)."""
    where = "; ".join(f"{a['source']} @ {a['snapshot']}: {a['path']}" for a in d["affects"]) or "no snapshot"
    return f"blob {d['blob'][:12]} in pack {d['pack'][:12]}: {d['problem']} (affects {where})"


# File systems that checksum data themselves: their own scrub finds what rots on the disks.
CHECKSUMMING = {"btrfs": "btrfs scrub start", "zfs": "zpool scrub"}
LAST_SCRUB = "pool.last_scrub"


def record_scrub(catalog: Catalog, report: CheckReport, seconds: float, fstype: str | None) -> dict[str, object]:
    """Keep the last scrub's summary in the catalog's settings (the UI shows it)."""
    summary: dict[str, object] = {
        "finished": time.time(), "seconds": round(seconds, 3), "packs": report.packs, "blobs": report.blobs,
        "bytes": report.bytes, "damaged": len(report.damage), "filesystem": fstype,
        "filesystem_checksums": CHECKSUMMING.get(fstype or ""),
    }  # fmt: skip
    catalog.set_setting(LAST_SCRUB, json.dumps(summary))
    return summary


def last_scrub(catalog: Catalog) -> dict[str, object] | None:
    value = catalog.setting(LAST_SCRUB)
    return json.loads(value) if value else None


def damage_doc(damage: list[Damage]) -> list[dict[str, object]]:
    """Damage as JSON: what is wrong with which blob, and which paths of which snapshots it affects."""
    return [{"blob": d.blob_id.hex(), "pack": d.pack, "problem": d.problem,
             "affects": [{"source": s, "snapshot": n, "path": p} for s, n, p in d.affects]}
            for d in damage]  # fmt: skip


def scrub(dep: Deployment, progress: Progress | None = None) -> tuple[CheckReport, dict[str, object]]:
    """Read every pack, locate what any damage affects, and record the summary (with the pool's file system).

    The image pool's packs too, where it has its own store; damage there is located in no snapshot's files.
    """
    start = time.monotonic()
    report = CheckReport()
    with dep.catalog.engine.connect() as conn:
        pools = [store.pool_id for store in dep.stores]
        total = conn.execute(select(func.sum(packs.c.size)).where(packs.c.pool_id.in_(pools))).scalar()
    report.total_bytes = int(total or 0)
    for store in dep.stores:
        check_pool(store, progress, report)
    locate(dep.trees, dep.list_snapshots(), report.damage)
    root = getattr(dep.backend, "root", None)
    fstype = filesystem_of(root) if root is not None else None
    return report, record_scrub(dep.catalog, report, time.monotonic() - start, fstype)
