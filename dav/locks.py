"""WebDAV locks: held in memory for at most an hour, and breakable by whoever may configure the source.

A lock keeps everyone else from writing what it covers, so a lock on a whole
`current/` stops that source's backups. Clients that hold a lock refresh it
before it runs out (the Windows WebDAV client asks for 3600 s, davfs2 for
1800 s), so an hour costs them nothing, while a lock left behind by a client
that went away lapses within the hour instead of wsgidav's four weeks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from wsgidav.lock_man.lock_storage import LockStorageDict

log = logging.getLogger(__name__)
MAX_TIMEOUT = 3600  # seconds; also what a lock asked for without a Timeout, or for an infinite one, gets

MayBreak = Callable[[str, str], bool]  # (user name, path under the share) -> may release others' locks there


def capped(timeout: float | None) -> float:
    """A requested lock lifetime (None: unspecified, negative: infinite), at most MAX_TIMEOUT seconds."""
    if timeout is None or timeout < 0 or timeout > MAX_TIMEOUT:
        return MAX_TIMEOUT
    return float(timeout)


class Storage(LockStorageDict):  # type: ignore[misc]
    """wsgidav's in-memory lock storage with lifetimes capped. Thread-safe, as LockStorageDict is."""

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        timeout = lock.get("timeout")
        lock["timeout"] = capped(None if timeout is None else float(timeout))
        return super().create(path, lock)  # type: ignore[no-any-return]

    def refresh(self, token: str, *, timeout: float) -> dict[str, Any]:
        return super().refresh(token, timeout=capped(timeout))  # type: ignore[no-any-return]


class Breakable:
    """wsgidav's lock manager, except that UNLOCK also releases another user's lock for whoever `may_break` it.

    wsgidav lets only a lock's owner unlock it. Everything else is the
    manager's own (attributes are passed through), so it stays as thread-safe
    as the manager is.
    """

    def __init__(self, locks: Any, may_break: MayBreak):
        self._locks = locks
        self._may_break = may_break

    def __getattr__(self, name: str) -> Any:
        return getattr(self._locks, name)

    def is_token_locked_by_user(self, token: str, principal: str) -> bool:
        """Asked by UNLOCK only: whether `principal` may release the lock `token`."""
        if self._locks.is_token_locked_by_user(token, principal):
            return True
        lock = self._locks.get_lock(token)
        if lock is None or not self._may_break(principal, unquote(lock["root"])):
            return False
        log.info("%s breaks the lock on %s held by %s", principal, unquote(lock["root"]), lock["principal"])
        return True
