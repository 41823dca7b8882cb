"""Web sessions: a catalog row per signed-in browser, so that a session can be ended on the server.

The cookie carries only a random token; the catalog keeps the token's
SHA-256 (a random token needs no slow hash), the user, the session's CSRF
token, when it began, when it was last seen and the client's address.
Knowing the catalog's contents does not let anyone sign in, and there is
no signing key to steal. A session ends on sign-out, when its user's
password changes or the user is removed, after LIFETIME whatever happens
and after IDLE without a request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, delete, or_, select, update

from engine.catalog import Catalog
from engine.catalog.schema import web_sessions

LIFETIME = 12 * 3600.0  # a session ends 12 h after sign-in, used or not: a working day, then sign in again
IDLE = 3600.0  # ... or after an hour without a request
# last_seen is written at most this often: every request would otherwise be a catalog write, and a
# minute is nothing against IDLE.
TOUCH_EVERY = 60.0


@dataclass(frozen=True)
class WebSession:
    id: int
    user_id: int
    csrf: str


class WebSessions:
    """The catalog's web sessions. Thread-safe: every call uses its own catalog connection.

    `clock` (wall time: the rows are shared by every appliance on the catalog) can be replaced in tests.
    """

    def __init__(self, catalog: Catalog, clock: Callable[[], float] = time.time):
        self.catalog = catalog
        self.clock = clock

    def start(self, user_id: int, address: str) -> tuple[str, WebSession]:
        """A new session for a user who just signed in: (the cookie's token, the session)."""
        token, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(24), self.clock()
        with self.catalog.engine.begin() as conn:
            self._sweep(conn, now)
            session_id = self.catalog.insert_id(conn, web_sessions.insert().values(
                digest=_digest(token), user_id=user_id, csrf=csrf, created=now, last_seen=now, address=address[:64],
            ))  # fmt: skip
        return token, WebSession(session_id, user_id, csrf)

    def find(self, token: str) -> WebSession | None:
        """The live session a cookie's token names, or None (unknown, ended or expired)."""
        now = self.clock()
        q = select(web_sessions.c.id, web_sessions.c.user_id, web_sessions.c.csrf, web_sessions.c.created,
                   web_sessions.c.last_seen).where(web_sessions.c.digest == _digest(token))  # fmt: skip
        with self.catalog.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            return None
        session_id, user_id, csrf, created, last_seen = row
        if now - created >= LIFETIME or now - last_seen >= IDLE:
            self.end(session_id)
            return None
        if now - last_seen >= TOUCH_EVERY:
            with self.catalog.engine.begin() as conn:
                conn.execute(update(web_sessions).where(web_sessions.c.id == session_id).values(last_seen=now))
        return WebSession(int(session_id), int(user_id), str(csrf))

    def end(self, session_id: int) -> None:
        with self.catalog.engine.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.id == session_id))

    @staticmethod
    def end_all(conn: Connection, user_id: int, keep: int | None = None) -> None:
        """End every session of a user (but `keep`), inside the caller's transaction."""
        q = delete(web_sessions).where(web_sessions.c.user_id == user_id)
        conn.execute(q if keep is None else q.where(web_sessions.c.id != keep))

    def _sweep(self, conn: Connection, now: float) -> None:
        """Drop expired rows (on each sign-in: a session nobody ends otherwise stays)."""
        conn.execute(delete(web_sessions).where(or_(web_sessions.c.created <= now - LIFETIME,
                                                    web_sessions.c.last_seen <= now - IDLE)))  # fmt: skip


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
