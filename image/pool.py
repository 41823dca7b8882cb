"""The image pool of a deployment: the sources' disk images and the versions snapshots froze.

A source's writable images are rows of `images` (name, size, block size,
block map root); a snapshot copies them into `image_versions` in its own
transaction, so `<disk>@<snapshot>` is what the image was when the
snapshot was taken. Blocks, patches and map nodes are blobs of the image
pool's blob store: the file pool's (deduplicated with everything else)
unless the deployment has an image pool of its own (engine/imagestore.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update

from engine.cache import check_may_block
from engine.catalog.schema import image_versions, images, snapshots, sources
from engine.deployment import Deployment
from engine.errors import Exists, InvalidName, NotFound
from engine.ids import HOLE
from engine.meta import check_label

from .disk import Disk, VersionReader

# 64 KiB blocks, chosen by bench/image_bench.py on a 1 GiB ext4 image (80%
# full). A push of a version with 1% of its 4 KiB pages changed stores 0.02
# of what restic adds at 64, 128 and 256 KiB alike (changed blocks are
# patches of their pages). In-place writes decide: the same 1% rewritten
# at random through the image pool after two such versions took 1.4 s and
# stored 15 MB at 64 KiB, 1.6 s / 19 MB at 128 KiB, 3.3 s / 27 MB at 256 KiB
# (a changed block is read whole first, and a patch carries every page that
# differs from its base). Larger blocks cost less catalog: about 2.1, 1.2
# and 0.7 GiB per TiB of stored blocks, and push a first version faster.
BLOCK_SIZE = 64 << 10
BLOCK_SIZES = (4 << 10, 16 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20)


@dataclass(frozen=True)
class ImageInfo:
    """A writable image (`snapshot` None) or the version a snapshot froze."""

    id: int
    source: str
    name: str
    size: int
    block_size: int
    root: bytes
    changed: float
    snapshot: str | None = None

    @property
    def file_name(self) -> str:
        return f"{self.name}.img" if self.snapshot is None else f"{self.name}@{self.snapshot}.img"


def check_disk_name(name: str) -> str:
    check_label(name, "disk")
    if "@" in name or "/" in name:
        raise InvalidName(f"invalid disk name {name!r}: no '@'")
    return name


@dataclass(eq=False)
class _Open:
    disk: Disk
    info: ImageInfo
    token: int  # blob store session: what the disk put is referenced once its row commits
    commit_lock: threading.Lock = field(default_factory=threading.Lock)


class ImagePool:
    """Thread-safe: `_lock` guards `_open`; each Disk guards itself; commits of one disk are serialized."""

    def __init__(self, dep: Deployment, block_size: int = BLOCK_SIZE):
        if block_size not in BLOCK_SIZES:
            raise ValueError(f"block size {block_size} is not one of {BLOCK_SIZES}")
        self.dep = dep
        self.blobs = dep.image_blobs  # the image pool's own store, or the file pool's
        self.block_size = block_size
        self._lock = threading.Lock()
        self._open: dict[int, _Open] = {}
        dep.snapshot_hooks.append(self.commit_source)
        dep.worktrees.holds_lease.append(self._has_open)

    def _has_open(self, source: str) -> bool:
        with self._lock:
            return any(o.info.source == source for o in self._open.values())

    # -- catalog -------------------------------------------------------------

    def images(self, source: str | None = None) -> list[ImageInfo]:
        """A source's writable images, or every source's (None)."""
        q = (
            select(images.c.id, sources.c.name, images.c.name, images.c.size, images.c.block_size,
                   images.c.root, images.c.changed)
            .join(sources, sources.c.id == images.c.source_id)
            .order_by(sources.c.name, images.c.name)
        )  # fmt: skip
        if source is not None:
            q = q.where(sources.c.name == source)
        with self.dep.catalog.engine.connect() as conn:
            found = [ImageInfo(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6]) for r in conn.execute(q)]
        with self._lock:  # what open disks hold beats what was last committed
            return [self._live(i) for i in found]

    def _live(self, info: ImageInfo) -> ImageInfo:
        held = self._open.get(info.id)
        if held is None:
            return info
        return ImageInfo(info.id, info.source, info.name, held.disk.size, info.block_size, info.root, info.changed)

    def versions(self, source: str | None = None, snapshot: str | None = None) -> list[ImageInfo]:
        """The image versions of a source's snapshots (or every source's: None), oldest snapshot first."""
        q = (
            select(image_versions.c.id, sources.c.name, image_versions.c.name, image_versions.c.size,
                   image_versions.c.block_size, image_versions.c.root, snapshots.c.created, snapshots.c.name)
            .join(snapshots, snapshots.c.id == image_versions.c.snapshot_id)
            .join(sources, sources.c.id == snapshots.c.source_id)
            .order_by(snapshots.c.created, snapshots.c.id, image_versions.c.name)
        )  # fmt: skip
        if source is not None:
            q = q.where(sources.c.name == source)
        if snapshot is not None:
            q = q.where(snapshots.c.name == snapshot)
        with self.dep.catalog.engine.connect() as conn:
            return [ImageInfo(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7]) for r in conn.execute(q)]

    def by_id(self, row_id: int, version: bool) -> ImageInfo:
        """An image (or, with `version`, an image version) by its row id."""
        with self.dep.catalog.engine.connect() as conn:
            if version:
                row = conn.execute(
                    select(sources.c.name, snapshots.c.name)
                    .join(snapshots, snapshots.c.source_id == sources.c.id)
                    .join(image_versions, image_versions.c.snapshot_id == snapshots.c.id)
                    .where(image_versions.c.id == row_id)
                ).first()
            else:
                row = conn.execute(
                    select(sources.c.name, sources.c.name)
                    .join(images, images.c.source_id == sources.c.id)
                    .where(images.c.id == row_id)
                ).first()
        found = [] if row is None else (self.versions(row[0], row[1]) if version else self.images(row[0]))
        for info in found:
            if info.id == row_id:
                return info
        raise NotFound(f"no image {row_id}")

    def find(self, source: str, name: str) -> ImageInfo:
        for info in self.images(source):
            if info.name == name:
                return info
        raise NotFound(f"no image {name!r} in source {source!r}")

    def version(self, source: str, name: str, snapshot: str) -> ImageInfo:
        for info in self.versions(source, snapshot):
            if info.name == name:
                return info
        self.dep.snapshot_info(source, snapshot)  # NotFound names the snapshot if that is what is missing
        raise NotFound(f"snapshot {snapshot!r} of {source!r} holds no image {name!r}")

    def create(self, source: str, name: str, size: int = 0) -> ImageInfo:
        check_disk_name(name)
        self.dep.check_writable()
        self.dep.working_tree(source)  # the source's lease: one writing process
        with self.dep.catalog.engine.begin() as conn:
            sid = conn.execute(select(sources.c.id).where(sources.c.name == source)).scalar_one()
            if conn.execute(select(images.c.id).where(images.c.source_id == sid, images.c.name == name)).first():
                raise Exists(f"image {name!r} of {source!r} exists")
            conn.execute(images.insert().values(
                source_id=sid, name=name, size=0, block_size=self.block_size, root=HOLE, changed=time.time()
            ))  # fmt: skip
        if size:
            self.disk(source, name).truncate(size)
            self.commit(source, name)
        return self.find(source, name)

    def remove(self, source: str, name: str) -> None:
        """Drop the writable image; the versions in snapshots stay."""
        self.dep.check_writable()
        info = self.find(source, name)
        self.dep.working_tree(source)
        with self._lock:
            held = self._open.pop(info.id, None)
        with self.dep.catalog.engine.begin() as conn:
            conn.execute(delete(images).where(images.c.id == info.id))
        if held is not None:
            self.blobs.inflight.end(held.token)

    # -- writing -------------------------------------------------------------

    def disk(self, source: str, name: str) -> Disk:
        """The writable image, open in this process (which leases the source)."""
        info = self.find(source, name)
        return self.open_disk(info)

    def open_disk(self, info: ImageInfo) -> Disk:
        with self._lock:
            held = self._open.get(info.id)
            if held is not None:
                return held.disk
        check_may_block()
        self.dep.check_writable()
        self.dep.working_tree(info.source)
        token = self.blobs.inflight.begin()
        opened = _Open(Disk(self.blobs, info.root, info.size, info.block_size), info, token)
        with self._lock:
            held = self._open.setdefault(info.id, opened)
        if held is not opened:
            self.blobs.inflight.end(token)
        return held.disk

    def live_size(self, info: ImageInfo) -> int:
        """A writable image's size: as an open disk has it now, else as last committed."""
        with self._lock:
            held = self._open.get(info.id)
        return info.size if held is None else held.disk.size

    def reader(self, info: ImageInfo) -> VersionReader:
        """Reads a version, or the writable image as it is now (open or as last committed)."""
        if info.snapshot is None:
            with self._lock:
                held = self._open.get(info.id)
            if held is not None:
                return held.disk
        return VersionReader(self.blobs, info.root, info.size, info.block_size)

    def commit(self, source: str, name: str) -> None:
        with self._lock:
            held = next((o for o in self._open.values() if o.info.source == source and o.info.name == name), None)
        if held is not None:
            self._commit(held)

    def _commit(self, held: _Open) -> None:
        """Store the disk's blocks and map, then record its root: what a snapshot will freeze."""
        with held.commit_lock:
            if not held.disk.changed and not held.disk.map.changed:
                return
            token = self.blobs.inflight.begin()
            root, size = held.disk.commit_map()
            self.blobs.flush()
            with self.dep.catalog.engine.begin() as conn:
                conn.execute(update(images).where(images.c.id == held.info.id).values(
                    root=root, size=size, changed=time.time()
                ))  # fmt: skip
            token, held.token = held.token, token
            self.blobs.inflight.end(token)

    def discard(self, info: ImageInfo) -> None:
        """Forget what was written to an open disk since its last commit (a push that failed)."""
        with self._lock:
            held = self._open.pop(info.id, None)
        if held is not None:
            self.blobs.inflight.end(held.token)

    def commit_source(self, source: str) -> None:
        """Commit every open image of a source (before it is snapshotted)."""
        with self._lock:
            held = [o for o in self._open.values() if o.info.source == source]
        for o in held:
            self._commit(o)

    def close(self) -> None:
        """Commit and forget every open image."""
        with self._lock:
            held = list(self._open.values())
        for o in held:
            self._commit(o)
        with self._lock:
            self._open.clear()
        for o in held:
            self.blobs.inflight.end(o.token)
        if self.commit_source in self.dep.snapshot_hooks:
            self.dep.snapshot_hooks.remove(self.commit_source)
