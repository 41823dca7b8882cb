"""The working trees one process holds, each under its source's lease; idle ones are let go of.

A process that loads a source's working tree leases the source: no other
process writes it meanwhile. A long-running one (`cairn serve`) lets a tree go
with its lease once nothing changed it for `tree_idle` seconds, so that
`cairn backup` or `pool gc` beside it can take the lease; the next change
loads the tree again. A CLI process waits up to `lease_wait` seconds for a
lease another process holds, and says so once.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from . import leases, private
from .blobstore import BlobStore
from .cache import check_may_block
from .catalog import Catalog
from .errors import InUse
from .worktree import WorkingTree
from .worktree.residency import trim_target
from .worktree.tree import NameWatcher

log = logging.getLogger(__name__)

TREE_IDLE = 60.0  # seconds without a change before a long-running process lets a tree go
TREE_CACHE = 512 << 20  # bytes of loaded inodes kept across all working trees (the `tree_cache` setting)
INODE_BYTES = 1000  # what one loaded inode costs in RSS, with its name and its place in the tables (measured)
T = TypeVar("T")


class WorkingTrees:
    """Thread-safe: `_lock` guards `_trees`; each WorkingTree guards itself."""

    def __init__(self, catalog: Catalog, blobs: BlobStore, owner: str, spool_root: Callable[[], Path]):
        self.catalog = catalog
        self.blobs = blobs
        self.owner = owner
        self.spool_root = spool_root
        self.tree_idle = TREE_IDLE
        self.cache_bytes = TREE_CACHE
        self._retry_at = 0.0  # a trim that freed nothing is not tried again before this
        self.lease_wait = 0.0  # seconds a call that needs another process's lease waits for it (CLI commands)
        self.on_lease_wait: Callable[[str], None] | None = None  # told once when one starts waiting
        self.holds_lease: list[Callable[[str], bool]] = []  # what else keeps a source leased (open disk images)
        # Told of every name that appears or goes in any working tree; each tree holds this very list.
        self.name_watchers: list[NameWatcher] = []
        self._lock = threading.Lock()
        self._trees: dict[str, WorkingTree] = {}

    def get(self, name: str) -> WorkingTree:
        """The source's working tree, leased to this process (after `lease_wait` seconds at most)."""
        with self._lock:
            tree = self._trees.get(name)
            if tree is not None and not tree.unloaded:
                return tree
            check_may_block()
            sid = self.waiting_for_leases(functools.partial(self._lease, name))
            spool = self.spool_root() / str(sid)
            private.make_dirs(spool)
            tree = WorkingTree(self.catalog, sid, self.blobs, spool)
            tree.watchers = self.name_watchers
            tree.keep = self.keep
            self._trees[name] = tree
            return tree

    @property
    def keep(self) -> int:
        """How many inodes the loaded trees may hold together."""
        return max(1000, self.cache_bytes // INODE_BYTES)

    def trim(self) -> int:
        """Let go of directories' entries beyond the budget, from the least recently changed trees first."""
        trees = sorted(self.loaded(), key=lambda t: t.used_at)
        total = sum(t.loaded for t in trees)
        if total <= self.keep or time.monotonic() < self._retry_at:
            return 0  # within budget, or nothing could go a moment ago: a pass over every entry is not free
        excess = total - trim_target(self.keep)
        went = 0
        for tree in trees:
            if excess - went <= 0:
                break
            went += tree.trim(tree.loaded - (excess - went))
        self._retry_at = 0.0 if went else time.monotonic() + 10.0
        return went

    def loaded(self) -> list[WorkingTree]:
        with self._lock:
            return list(self._trees.values())

    def pop(self, name: str) -> WorkingTree | None:
        with self._lock:
            return self._trees.pop(name, None)

    def take_all(self) -> list[WorkingTree]:
        with self._lock:
            trees = list(self._trees.values())
            self._trees.clear()
            return trees

    def _lease(self, name: str) -> int:
        with self.catalog.engine.begin() as conn:
            sid = Catalog.source_id(conn, name)
            leases.acquire(conn, sid, name, self.owner)
            return sid

    def waiting_for_leases(self, take: Callable[[], T]) -> T:
        """`take()`, tried again each second for `lease_wait` seconds while another process holds a lease."""
        deadline, told = time.monotonic() + self.lease_wait, False
        while True:
            try:
                return take()
            except InUse as e:
                if time.monotonic() >= deadline:
                    raise
                if not told and self.on_lease_wait is not None:
                    self.on_lease_wait(f"{e}; waiting up to {self.lease_wait:.0f} s for it to be let go of")
                    told = True
                time.sleep(1.0)

    def let_go_idle(self) -> list[str]:
        """Drop the trees nothing changed for `tree_idle` seconds and give up their leases."""
        with self._lock:
            trees = list(self._trees.items())
        gone = []
        for name, tree in trees:
            if any(held(name) for held in self.holds_lease) or not tree.let_go(self.tree_idle):
                continue
            with self._lock:  # unless get() loaded it again meanwhile: that one holds the lease now
                if self._trees.get(name) is tree:
                    del self._trees[name]
                    with self.catalog.engine.begin() as conn:
                        leases.release_source(conn, tree.source_id, self.owner)
                    gone.append(name)
        for name in gone:
            log.info("source %s: working tree let go of, after %.0f s without a change", name, self.tree_idle)
        return gone
