"""A deployment: the catalog, the file pool, and the sources in one data directory.

The appliance builds one Deployment and hands it down; nothing here reads
the environment or keeps module-level state.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from . import leases, maintenance, nameindex, private, snapshots
from .blobstore import BlobStore
from .catalog import Catalog, open_catalog
from .catalog.schema import dirents, images, inodes, pools, sources
from .catalog.schema import leases as lease_rows
from .catalog.schema import snapshots as snapshot_rows
from .codec import Codec, CodecConfig
from .errors import CairnError, Exists, NoSpace, NotEmpty, NotFound
from .ids import IdKey
from .imagestore import image_pool_usage, open_image_pool, pool_counts, store_state
from .keyring import Sealer, Unlock
from .meta import check_source_name
from .pool import OpenPool as OpenPool  # where it lived before
from .pool import open_file_pool
from .reader import SnapshotView, TreeCache
from .snapshots import SnapshotInfo
from .storage.filter import find_layer
from .storage.local import LocalBackend
from .storage.spool import Spool
from .tree import entry_bytes
from .worktree import WorkingTree
from .worktree.freeze import freeze
from .worktrees import WorkingTrees

log = logging.getLogger(__name__)

COMMIT_INTERVAL = 0.5  # seconds between group commits of working trees
PACK_MAX_AGE = 5.0  # an open pack is stored after this long, even if small


@dataclass(frozen=True)
class SourceInfo:
    name: str
    uuid: str
    created: float
    snapshots: int
    last_snapshot: float | None
    id: int = 0


def default_db_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'catalog.db'}"


def _catalog_files(db_url: str) -> list[Path]:
    """A SQLite catalog's files (database, WAL, shared memory), wherever it lives; none for PostgreSQL."""
    if not db_url.startswith("sqlite:///") or db_url.endswith(":memory:"):
        return []
    db = Path(db_url.removeprefix("sqlite:///"))
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


class Deployment:
    """Thread-safe. `_lock` guards `_snapshotting` and `_committed`; the working trees guard themselves."""

    def __init__(self, catalog: Catalog, pool: OpenPool, data_dir: Path, image_pool: OpenPool | None = None):
        self.catalog = catalog
        self.data_dir = data_dir
        self.pool = pool
        self.backend = pool.backend
        self.codec = Codec(pool.codec, pool.keys)
        self.blobs = BlobStore(catalog, pool.id, pool.backend, IdKey(pool.keys.id_key), self.codec)
        self.trees = TreeCache(self.blobs)
        # Image blocks, patches and block map nodes: the image pool's own store, or the file pool's (imagestore.py).
        self.image_pool = image_pool
        self.image_blobs = self.blobs
        if image_pool is not None:
            self.image_blobs = BlobStore(catalog, image_pool.id, image_pool.backend, self.blobs.id_key, self.codec)
        self.stores = list(dict.fromkeys([self.blobs, self.image_blobs]))  # each once, the file pool's first
        self.owner = leases.new_owner()
        self._lock = threading.Lock()
        self.worktrees = WorkingTrees(catalog, self.blobs, self.owner, lambda: self.spool_root)
        # One snapshot of a source at a time in this process: two (a session's and a schedule's,
        # say) would pick the same default name, and the second would fail on it.
        self._snapshotting: dict[str, threading.Lock] = {}
        # One indexing of a source's names at a time, and no snapshot of it deleted meanwhile (nameindex.py).
        self._indexing: dict[str, threading.Lock] = {}
        self._index_queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._indexer: threading.Thread | None = None  # started with the first snapshot; close() lets it finish
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        # Called with a source's name before it is snapshotted: the image pool commits that source's images.
        self.snapshot_hooks: list[Callable[[str], None]] = []
        self.maintenance = maintenance.read(catalog)
        self._maintenance_lock = threading.Lock()  # serializes taking up a change of the flag
        self.spool = find_layer(self.backend, Spool)
        self.image_spool = find_layer(image_pool.backend, Spool) if image_pool is not None else None
        self._spools = [s for s in (self.spool, self.image_spool) if s is not None]
        # Committed snapshots (uuid) and, per spool, the number that must drain before they are stored.
        self._committed: dict[str, tuple[int, ...]] = {}
        if self._spools:
            with catalog.engine.connect() as conn:
                waiting = conn.execute(select(snapshot_rows.c.uuid).where(snapshot_rows.c.state == snapshots.COMMITTED))
                self._committed = {r[0]: self._spool_marks() for r in waiting}

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(
        cls, data_dir: str | Path, db_url: str | None = None, *, create: bool = True,
        unlock: Unlock | None = None, encrypt: bool = False, pool_config: dict[str, Any] | None = None,
    ) -> Deployment:  # fmt: skip
        """Open (or create) the deployment in `data_dir`.

        `unlock` opens an encrypted pool; `encrypt` makes a new pool encrypted, wrapping its keys with
        `unlock`; `pool_config` puts a new file pool on that backend (default: DATA/pool).
        """
        data_dir = Path(data_dir).absolute()
        if create:
            private.make_dirs(data_dir)
        elif not data_dir.is_dir():
            raise NotFound(f"no data directory {data_dir}")
        db_url = db_url or default_db_url(data_dir)
        private.secure(data_dir, _catalog_files(db_url))
        catalog = open_catalog(db_url)
        try:
            pool = open_file_pool(catalog, data_dir, create, unlock, encrypt, pool_config)
            if pool.keys.encrypted:
                catalog.sealer = Sealer(pool.keys)
                catalog.seal_secrets()
            image_pool = open_image_pool(catalog, data_dir, pool.keys)
        except BaseException:
            catalog.dispose()
            raise
        dep = cls(catalog, pool, data_dir, image_pool)
        dep.clear_dead_spools()
        return dep

    @property
    def spool_root(self) -> Path:
        # Spool files are local to this machine: the directory names the process.
        return self.data_dir / "spool" / f"{os.getpid()}.{self.owner.rsplit(':', 1)[-1]}"

    def clear_dead_spools(self) -> None:
        """Remove the spool files of processes on this host that died: their writes were never committed."""
        base = self.data_dir / "spool"
        if not base.is_dir():
            return
        for entry in base.iterdir():
            pid = entry.name.partition(".")[0]
            if entry.is_dir() and pid.isdigit() and not leases.pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)

    def start_flusher(self) -> None:
        """Commit working trees in the background (long-running processes), following maintenance mode."""
        # Announced before the flag is read again: a `maintenance on` in between either sees this
        # process behind and waits for it, or set the flag before the read below.
        maintenance.announce(self.catalog, self.owner, self.maintenance)
        self._follow_maintenance()
        self.worktrees.lease_wait = 0.0  # a long-running process answers at once: EBUSY, not a hung request
        self._flusher = threading.Thread(target=self._flush_loop, name="cairn-commit", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        last_renew = time.monotonic()
        while not self._stop.wait(COMMIT_INTERVAL):
            try:
                for store in self.stores:
                    store.flush_if_older(PACK_MAX_AGE)
                self.commit()
                self.mark_stored()
                self.worktrees.trim()
                self.worktrees.let_go_idle()
                self._follow_maintenance()
            except NoSpace as e:  # a full pool: writers already report it (507, ENOSPC); no traceback each retry
                log.warning("background commit waits for space: %s", e)
            except Exception:
                log.exception("background commit failed; retrying")
            # Apart from the commit: failing commits must not let the lease expire.
            if time.monotonic() - last_renew > leases.LEASE_SECONDS / 3:
                try:
                    with self.catalog.engine.begin() as conn:
                        leases.renew(conn, self.owner)
                    maintenance.announce(self.catalog, self.owner, self.maintenance)
                    last_renew = time.monotonic()
                except Exception:
                    log.exception("lease renewal failed; retrying")

    def loaded_source_ids(self) -> list[int]:
        """Sources whose working tree this process holds (and leases)."""
        return [tree.source_id for tree in self.worktrees.loaded()]

    def check_writable(self) -> None:
        """ReadOnly while the deployment is in maintenance mode."""
        maintenance.refuse(self.maintenance)

    def set_maintenance(self, reason: str | None, wait: float = maintenance.ACK_WAIT) -> None:
        """Enter maintenance mode (with a reason), or leave it (None), in every process on the catalog.

        Returns once every other long-running process follows the change; InUse after `wait` seconds if not.
        """
        with self._maintenance_lock:  # the flusher must not take up the old flag meanwhile
            if reason is not None:
                self.maintenance = {"reason": reason}  # refuse new writes here at once
                self._quiesce()
            self.maintenance = maintenance.write(self.catalog, reason)
            if self._flusher is not None:
                maintenance.announce(self.catalog, self.owner, self.maintenance)
        maintenance.wait_confirmed(self.catalog, self.maintenance, self.owner, wait)

    def _follow_maintenance(self) -> None:
        """Take up the catalog's maintenance flag if it changed; confirm it once this process follows it."""
        with self._maintenance_lock:
            flag = maintenance.read(self.catalog)
            if maintenance.seen(flag) == maintenance.seen(self.maintenance):
                return
            self.maintenance = flag  # refuse (or take) new writes from here on
            if flag is not None:
                self._quiesce()
            maintenance.announce(self.catalog, self.owner, flag)

    def _quiesce(self) -> None:
        """Leave nothing half-done: commit the working trees and store every pending blob."""
        self.commit()
        self.flush()
        self.commit()  # rows whose chunks just became stored

    def flush(self) -> None:
        """Return once every blob accepted by either pool's store is stored and indexed."""
        for store in self.stores:
            store.flush()

    def _spool_marks(self) -> tuple[int, ...]:
        return tuple(s.mark() for s in self._spools)

    def mark_stored(self) -> list[str]:
        """Committed snapshots whose blobs the spools have drained into the pools become stored."""
        if not self._spools:
            return []
        drained = tuple(s.drained_through() for s in self._spools)
        with self._lock:
            done = [u for u, n in self._committed.items() if all(a <= b for a, b in zip(n, drained, strict=True))]
        if done:
            with self.catalog.engine.begin() as conn:
                conn.execute(update(snapshot_rows).where(snapshot_rows.c.uuid.in_(done)).values(state=snapshots.STORED))
            with self._lock:
                for u in done:
                    self._committed.pop(u, None)
        return done

    def commit(self) -> None:
        for tree in self.worktrees.loaded():
            tree.commit()

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        if self._indexer is not None:
            self._index_queue.put(None)
            self._indexer.join()
        try:
            trees = self.worktrees.take_all()
            for tree in trees:
                tree.close()
            self.flush()
            for tree in trees:
                tree.commit()  # rows whose chunks just became stored
            with self.catalog.engine.begin() as conn:
                leases.release(conn, self.owner)
            if self._flusher is not None:
                maintenance.withdraw(self.catalog, self.owner)
            self.mark_stored()
        finally:
            for store in self.stores:
                store.close()
            for spool in self._spools:
                spool.close()  # what is still queued drains on the next start
            self.catalog.dispose()
            shutil.rmtree(self.spool_root, ignore_errors=True)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pool ----------------------------------------------------------------

    def pool_usage(self) -> dict[str, Any]:
        """Stored bytes, unique bytes and the dedup+compression ratio of the file pool; `image_pool`: its own usage."""
        counts = pool_counts(self.catalog, self.pool.id)
        with self.catalog.engine.connect() as conn:
            logical = conn.execute(select(func.coalesce(func.sum(snapshot_rows.c.bytes), 0))).scalar_one()
        stored, level = counts["stored_bytes"], self.codec.config.level
        images = image_pool_usage(self.catalog, self.image_pool, self.image_blobs, self.image_spool, level)
        return {
            "uuid": self.pool.uuid, "kind": self.pool.kind, "backend": self.backend.describe(),
            "zstd_level": level, **counts, "snapshot_bytes": int(logical),
            "ratio": round(int(logical) / int(stored), 2) if stored else None,
            "encrypted": self.pool.keys.encrypted, **self.pool_state(), "image_pool": images,
        }  # fmt: skip

    def source_sizes(self) -> dict[str, tuple[int, int]]:
        """Per source with snapshots: (bytes of its newest snapshot, bytes of the one before it or 0)."""
        q = (select(sources.c.name, snapshot_rows.c.bytes).join(sources, sources.c.id == snapshot_rows.c.source_id)
             .order_by(sources.c.name, snapshot_rows.c.created.desc(), snapshot_rows.c.id.desc()))  # fmt: skip
        out: dict[str, list[int]] = {}
        with self.catalog.engine.connect() as conn:
            for name, size in conn.execute(q):
                sizes = out.setdefault(name, [])
                if len(sizes) < 2:
                    sizes.append(int(size))
        return {name: (sizes[0], sizes[1] if len(sizes) > 1 else 0) for name, sizes in out.items()}

    def pool_state(self) -> dict[str, Any]:
        """The file pool online or offline (and why), the write-back spool's backlog, maintenance mode."""
        return {**store_state(self.blobs, self.spool), "maintenance": self.maintenance}

    def free_bytes(self) -> int:
        """Free space where the pool lives, or 0 if the backend cannot tell (object storage)."""
        local = find_layer(self.backend, LocalBackend)  # below any filters
        if local is None:
            return 0
        fs = os.statvfs(local.root)
        return fs.f_bavail * fs.f_frsize

    def configure_pool(self, codec: CodecConfig) -> None:
        """Change how new blobs are encoded; stored blobs keep their own header."""
        with self.catalog.engine.begin() as conn:
            conn.execute(pools.update().where(pools.c.id == self.pool.id).values(codec=codec.to_json()))
        self.codec.config = codec

    # -- sources -------------------------------------------------------------

    def add_source(self, name: str) -> SourceInfo:
        check_source_name(name)
        self.check_writable()

        with self.catalog.engine.begin() as conn:
            if conn.execute(select(sources.c.id).where(sources.c.name == name)).first():
                raise Exists(f"source {name!r} exists")
            conn.execute(sources.insert().values(uuid=str(uuid.uuid4()), name=name, created=time.time(), next_ino=2))
        return self.source(name)

    def source(self, name: str) -> SourceInfo:
        for info in self.list_sources():
            if info.name == name:
                return info
        raise NotFound(f"no source {name!r}")

    def list_sources(self) -> list[SourceInfo]:
        snaps = snapshot_rows
        q = (
            select(
                sources.c.name,
                sources.c.uuid,
                sources.c.created,
                func.count(snaps.c.id),
                func.max(snaps.c.created),
                sources.c.id,
            )
            .select_from(sources.outerjoin(snaps, snaps.c.source_id == sources.c.id))
            .group_by(sources.c.id)
            .order_by(sources.c.name)
        )
        with self.catalog.engine.connect() as conn:
            return [SourceInfo(*row) for row in conn.execute(q)]

    def remove_source(self, name: str) -> None:
        self.check_writable()
        with self.catalog.engine.connect() as conn:
            Catalog.source_id(conn, name)
            if snapshots.list_rows(conn, name):
                raise NotEmpty(f"source {name!r} has snapshots; delete them first")
        tree = self.worktrees.pop(name)
        if tree is not None:
            tree.close()
        with self.catalog.engine.begin() as conn:
            sid = Catalog.source_id(conn, name)
            if snapshots.list_rows(conn, name):
                raise NotEmpty(f"source {name!r} has snapshots; delete them first")
            leases.acquire(conn, sid, name, self.owner)
            nameindex.drop(conn, sid)
            for table in (dirents, inodes, images, lease_rows):
                conn.execute(delete(table).where(table.c.source_id == sid))
            conn.execute(delete(sources).where(sources.c.id == sid))

    def working_tree(self, name: str) -> WorkingTree:
        """The source's working tree, leased to this process (see worktrees.py)."""
        return self.worktrees.get(name)

    # -- snapshots -----------------------------------------------------------

    def create_snapshot(self, source: str, name: str | None = None, *, if_changed: bool = False) -> SnapshotInfo:
        """Freeze the working tree (and the source's disk images); returns once the snapshot is committed.

        `if_changed`: when the tree and images are those of the newest snapshot, commit nothing and
        return that snapshot (its `created` is older than the call).
        """
        self.check_writable()
        with self._lock:
            one_at_a_time = self._snapshotting.setdefault(source, threading.Lock())
        with one_at_a_time:
            return self._create_snapshot(source, name, if_changed)

    def _create_snapshot(self, source: str, name: str | None, if_changed: bool) -> SnapshotInfo:
        tree = self.working_tree(source)
        with self.catalog.engine.connect() as conn:
            existing = snapshots.list_rows(conn, source)
            taken = {s.name for s in existing}
        if name is None:
            name = snapshots.default_name(taken)
        snapshots.check_name(name)
        if name in taken:
            raise Exists(f"snapshot {name!r} of {source!r} exists")
        for hook in self.snapshot_hooks:
            hook(source)
        with self.blobs.inflight.session():  # its trees are referenced once the row commits
            frozen = freeze(tree)
            self.flush()  # the images' blocks too, where the image pool has its own store
            src = self.source(source)
            info = snapshots.new_info(source, src.uuid, name, frozen.top, frozen.files, frozen.bytes)
            newest = max(existing, key=lambda s: s.created, default=None)
            with self.catalog.engine.connect() as conn:
                info = dataclasses.replace(info, images=snapshots.source_images(conn, tree.source_id))
                if (if_changed and newest is not None and newest.root == info.root
                        and snapshots.frozen_images(conn, newest.uuid) == info.images):  # fmt: skip
                    log.info("snapshot of %s: nothing changed since %s", source, newest.name)
                    return newest
            if any(s.backlog()[0] for s in self._spools):
                info = dataclasses.replace(info, state=snapshots.COMMITTED)  # stored once the spools drain
            self.backend.put(snapshots.object_key(info.uuid), snapshots.encode_object(self.codec, info))
            with self.catalog.engine.begin() as conn:
                snapshots.insert_row(conn, tree.source_id, info)
                snapshots.freeze_images(conn, info)
        if info.state == snapshots.COMMITTED:
            with self._lock:
                self._committed[info.uuid] = self._spool_marks()
        tree.commit()
        log.info("snapshot %s of %s: %d trees written", name, source, frozen.trees_written)
        self._index_later(source)
        return info

    def _index_lock(self, source: str) -> threading.Lock:
        with self._lock:
            return self._indexing.setdefault(source, threading.Lock())

    def _index_later(self, source: str) -> None:
        """Index the source's new snapshots on the indexing thread: a snapshot does not wait for it."""
        with self._lock:
            if self._indexer is None:
                self._indexer = threading.Thread(target=self._index_loop, name="name index", daemon=True)
                self._indexer.start()
        self._index_queue.put(source)

    def _index_loop(self) -> None:
        while (source := self._index_queue.get()) is not None:
            try:
                self.index_names(source)
            except Exception as e:  # the snapshots stand; the next one, or a search, indexes them
                if isinstance(e, CairnError) and e.temporary:  # the pool does not answer, say
                    log.warning("the names of %s's new snapshots wait to be indexed: %s", source, e)
                else:
                    log.exception("indexing the names of the snapshots of %s", source)

    def index_names(self, source: str) -> int:
        """Bring the source's name index up to its newest snapshot; the snapshots it indexed."""
        with self._index_lock(source):
            with self.catalog.engine.connect() as conn:
                sid = Catalog.source_id(conn, source)
            started = time.monotonic()
            # Read past the cache, not into it: indexing must not push out what the mount's readers use.
            read = lambda tree_id: entry_bytes(self.blobs.cache.get(tree_id) or self.blobs.read_one(tree_id))  # noqa: E731
            try:
                count = nameindex.update_index(self.catalog, sid, read)
            except nameindex.Moved:  # another process changed it meanwhile: once more, from where it is now
                count = nameindex.update_index(self.catalog, sid, read)
        if count:
            log.info("name index of %s: %d snapshots in %.1f s", source, count, time.monotonic() - started)
        return count

    def search(self, source: str, query: str, limit: int = nameindex.RESULTS) -> tuple[list[nameindex.Found], bool]:
        """Paths in any snapshot of the source whose name matches `query` (nameindex.pattern), and whether
        there were more than `limit`."""
        try:
            self.index_names(source)
        except CairnError as e:
            if not e.temporary:
                raise
            log.warning("searching %s without its newest snapshots: %s", source, e)  # the pool is unreachable
        with self.catalog.engine.connect() as conn:
            return nameindex.search(conn, Catalog.source_id(conn, source), query, limit)

    def list_snapshots(self, source: str | None = None) -> list[SnapshotInfo]:
        with self.catalog.engine.connect() as conn:
            if source is not None:
                Catalog.source_id(conn, source)
            return snapshots.list_rows(conn, source)

    def snapshot_info(self, source: str, name: str) -> SnapshotInfo:
        with self.catalog.engine.connect() as conn:
            info = snapshots.find_row(conn, source, name)
        if info is None:
            raise NotFound(f"no snapshot {name!r} of source {source!r}")
        return info

    def snapshot(self, source: str, name: str) -> SnapshotView:
        return SnapshotView(self.trees, self.snapshot_info(source, name).root, f"{source} @ {name}")

    def delete_snapshot(self, source: str, name: str) -> None:
        self.check_writable()
        info = self.snapshot_info(source, name)
        with self._index_lock(source), self.catalog.engine.begin() as conn:
            snapshots.delete_row(conn, info.uuid)
        # After the row: a crash between the two leaves an object that a
        # rebuild would bring back, never a row without its object.
        self.backend.delete(snapshots.object_key(info.uuid))
