"""Backup sessions: a client connection that writes into a source through a front door, as a catalog row.

A session starts `running` and ends `done` (its snapshot named) or `failed`
(the reason in words), never in silence: a session whose appliance process
died is closed as failed by the next one to look (`close_abandoned`).
Thread-safe: every call uses its own catalog connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from .catalog import Catalog
from .catalog.schema import sessions, sources
from .errors import NotFound
from .leases import dead_here

RUNNING, DONE, FAILED = "running", "done", "failed"
STOPPED = "the appliance stopped during the session; run the backup again"


@dataclass(frozen=True)
class Session:
    id: int
    source: str
    door: str
    client: str
    principal: str
    started: float
    ended: float | None
    state: str
    reason: str | None
    bytes_received: int | None
    files_changed: int | None
    snapshot: str | None

    def to_json(self) -> dict[str, Any]:
        doc = {k: getattr(self, k) for k in self.__dataclass_fields__}
        doc["duration"] = None if self.ended is None else round(self.ended - self.started, 3)
        return doc


_COLUMNS = (sessions.c.id, sources.c.name, sessions.c.door, sessions.c.client, sessions.c.principal,
            sessions.c.started, sessions.c.ended, sessions.c.state, sessions.c.reason,
            sessions.c.bytes_received, sessions.c.files_changed, sessions.c.snapshot)  # fmt: skip


class Sessions:
    def __init__(self, catalog: Catalog, owner: str):
        self.catalog = catalog
        self.owner = owner  # this process, as its leases name it

    def begin(self, source: str, door: str, client: str, principal: str) -> Session:
        with self.catalog.engine.begin() as conn:
            sid = Catalog.source_id(conn, source)
            session_id = Catalog.insert_id(conn, sessions.insert().values(
                source_id=sid, door=door, client=client[:64], principal=principal[:255], started=time.time(),
                state=RUNNING, owner=self.owner))  # fmt: skip
        return self.get(session_id)

    def end(self, session_id: int, *, reason: str | None = None, bytes_received: int | None = None,
            files_changed: int | None = None) -> Session:  # fmt: skip
        """Close a running session: failed with `reason`, or done (its snapshot is recorded by `took`)."""
        values: dict[str, Any] = {"ended": time.time(), "state": FAILED if reason else DONE, "reason": reason}
        if bytes_received is not None:
            values["bytes_received"] = bytes_received
        if files_changed is not None:
            values["files_changed"] = files_changed
        with self.catalog.engine.begin() as conn:
            conn.execute(update(sessions).where(sessions.c.id == session_id, sessions.c.state == RUNNING)
                         .values(**values))  # fmt: skip
        return self.get(session_id)

    def took(self, session_id: int, snapshot: str | None, error: str | None = None) -> None:
        """What the session's snapshot came to: its name, or the error that made the session fail."""
        values: dict[str, Any] = {"snapshot": snapshot}
        if error is not None:
            values.update(state=FAILED, reason=f"the snapshot failed: {error}")
        with self.catalog.engine.begin() as conn:
            conn.execute(update(sessions).where(sessions.c.id == session_id).values(**values))

    def get(self, session_id: int) -> Session:
        rows = self._select(sessions.c.id == session_id, limit=1)
        if not rows:
            raise NotFound(f"no session {session_id}")
        return rows[0]

    def recent(self, source: str | None = None, limit: int = 100, state: str | None = None) -> list[Session]:
        where = []
        if source is not None:
            where.append(sources.c.name == source)
        if state is not None:
            where.append(sessions.c.state == state)
        return self._select(*where, limit=limit)

    def open_on(self, source: str) -> list[Session]:
        return self.recent(source, state=RUNNING)

    def last_success(self) -> dict[str, float]:
        """Per source, when its newest successful session ended."""
        q = (select(sources.c.name, func.max(sessions.c.ended)).select_from(sessions.join(sources))
             .where(sessions.c.state == DONE).group_by(sources.c.name))  # fmt: skip
        with self.catalog.engine.connect() as conn:
            return {name: float(t) for name, t in conn.execute(q) if t is not None}

    def close_abandoned(self, *, mine_too: bool = False) -> int:
        """Close as failed the running sessions whose process is gone (and, `mine_too`, this process's)."""
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(select(sessions.c.id, sessions.c.owner).where(sessions.c.state == RUNNING)).all()
        gone = [r.id for r in rows if dead_here(r.owner) or (mine_too and r.owner == self.owner)]
        for session_id in gone:
            self.end(session_id, reason=STOPPED)
        return len(gone)

    def _select(self, *where: Any, limit: int) -> list[Session]:
        q = select(*_COLUMNS).select_from(sessions.join(sources)).order_by(sessions.c.id.desc()).limit(limit)
        for w in where:
            q = q.where(w)
        with self.catalog.engine.connect() as conn:
            return [Session(*tuple(row)) for row in conn.execute(q)]
