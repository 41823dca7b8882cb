"""Users, groups and roles, passwords and API tokens, kept in the catalog.

A role applies within a group: admin (everything in it), operator (run,
restore and configure the group's sources), member (see and restore the
sources they own). A user with `admin` set may do everything everywhere.
Passwords are stored as scrypt hashes (the WebDAV share's format, so it
checks the same accounts); tokens as their SHA-256 (a token is
random, so a fast hash is enough), shown once when made. Web sessions
(websessions.py) end when their user's password changes or the user goes.
Each password also gets its NT hash (MD4 of the UTF-16 password), the only
form Samba checks an SMB sign-in against: a secret setting `door/ntlm/<id>`,
sealed in an encrypted deployment, set with the password and removed with
the user.
The first administrator's one-time password also waits in the data
directory (FIRST_PASSWORD) for the appliance's console to show; it goes
once that password is set otherwise or its user goes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Row, delete, func, select, update

from dav.passwords import UNKNOWN, hash_password
from dav.passwords import check_password as _check
from engine.catalog import Catalog
from engine.catalog.schema import groups, memberships, settings, source_access, sources, tokens, users
from engine.deployment import Deployment
from engine.errors import Conflict, Exists, InvalidArgument, NotFound

from .websessions import WebSessions

ROLES = ("admin", "operator", "member")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
PASSWORD_MIN = 8
FIRST_ADMIN = "admin"  # made with a one-time password at the first start (server.first_admin)
FIRST_PASSWORD = "first-password"  # in the data directory, 0600: that password, until it is changed
_USER = (users.c.id, users.c.name, users.c.admin, users.c.must_change)  # what a User is made of
TOKEN_CACHE = 10.0  # seconds a checked token is trusted: a revocation elsewhere takes this long
NTLM = "door/ntlm/"  # + user id: the NT hash of the user's password, for the SMB share


def nt_hash(password: str) -> str:
    """The NT hash Samba checks an SMB sign-in against: MD4 of the UTF-16LE password, in upper-case hex."""
    from Cryptodome.Hash import MD4  # here: its import parses C declarations, ~150 ms every CLI start would pay

    return MD4.new(password.encode("utf-16-le")).hexdigest().upper()


class BadLogin(InvalidArgument):
    """Wrong name or password (which one is not said)."""

    errno = 13
    status = 401


@dataclass(frozen=True)
class User:
    id: int
    name: str
    admin: bool
    roles: dict[str, str]  # group name -> role
    must_change: bool = False  # signed in with a one-time password: a new one comes first


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(f"a {what} name is 1-64 letters, digits and . _ @ - (starting with a letter or digit)")
    return name


class Accounts:
    """Thread-safe: every call uses its own catalog connection; `_lock` guards the token cache."""

    def __init__(self, catalog: Catalog, first_password: Path | None = None):
        self.catalog = catalog
        self.first_password = first_password  # the file FIRST_PASSWORD, when there is a data directory
        self._lock = threading.Lock()  # guards `_tokens`
        self._tokens: dict[bytes, tuple[User, float]] = {}  # token digest -> (user, checked at)
        self.sessions = WebSessions(catalog)

    @classmethod
    def of(cls, dep: Deployment) -> Accounts:
        return cls(dep.catalog, dep.data_dir / FIRST_PASSWORD)

    # -- users ---------------------------------------------------------------

    def add_user(self, name: str, password: str, *, admin: bool = False, one_time: bool = False) -> User:
        """A new user; `one_time`: the password must be changed at the first sign-in."""
        check_name(name, "user")
        if not isinstance(password, str) or len(password) < PASSWORD_MIN:
            raise InvalidArgument(f"a password has at least {PASSWORD_MIN} characters")
        with self.catalog.engine.begin() as conn:
            if conn.execute(select(users.c.id).where(users.c.name == name)).first():
                raise Exists(f"user {name!r} exists")
            conn.execute(users.insert().values(name=name, password=hash_password(password), admin=admin,
                                               created=time.time(), must_change=one_time))  # fmt: skip
            uid = conn.execute(select(users.c.id).where(users.c.name == name)).scalar_one()
            self._set_nt_hash(conn, uid, password)
        return self.user(name)

    def set_password(self, name: str, password: str, *, keep_session: int | None = None,
                     one_time: bool = False) -> None:  # fmt: skip
        """Change a password and end the user's web sessions: all of them, or all but `keep_session`
        (the one that made the change). API tokens stay: each is a credential of its own.
        `one_time`: the user must change it at the next sign-in (a reset)."""
        if not isinstance(password, str) or len(password) < PASSWORD_MIN:
            raise InvalidArgument(f"a password has at least {PASSWORD_MIN} characters")
        with self.catalog.engine.begin() as conn:
            uid = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
            if uid is None:
                raise NotFound(f"no user {name!r}")
            conn.execute(update(users).where(users.c.id == uid)
                         .values(password=hash_password(password), must_change=one_time))  # fmt: skip
            self._set_nt_hash(conn, uid, password)
            self.sessions.end_all(conn, uid, keep=keep_session)
        self._first_password_gone(name)

    def reset_password(self, name: str) -> str:
        """A new one-time password for `name` (shown once to whoever reset it); their web sessions end."""
        password = secrets.token_urlsafe(12)
        self.set_password(name, password, one_time=True)
        return password

    def set_admin(self, name: str, admin: bool) -> User:
        """Make a user an administrator of the whole appliance, or no longer one (never the last one)."""
        with self.catalog.engine.begin() as conn:
            uid = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
            if uid is None:
                raise NotFound(f"no user {name!r}")
            if not admin:
                self._keep_an_admin(conn, uid)
            conn.execute(update(users).where(users.c.id == uid).values(admin=admin))
        with self._lock:
            self._tokens.clear()  # a token's cached user carries the old flag
        return self.user(name)

    @staticmethod
    def _keep_an_admin(conn: Connection, uid: int) -> None:
        others = conn.execute(select(func.count()).select_from(users).where(users.c.admin, users.c.id != uid))
        was = conn.execute(select(users.c.admin).where(users.c.id == uid)).scalar()
        if was and not others.scalar_one():
            raise Conflict("this is the last administrator: make another user one first")

    def _set_nt_hash(self, conn: Connection, uid: int, password: str) -> None:
        key = f"{NTLM}{uid}"
        conn.execute(delete(settings).where(settings.c.key == key))
        conn.execute(settings.insert().values(key=key, value=self.catalog.seal(key, nt_hash(password))))

    def nt_hashes(self) -> dict[int, str]:
        """User id -> the NT hash of the password (users whose password was set before SMB existed have none)."""
        return {int(k[len(NTLM) :]): v for k, v in self.catalog.settings_like(NTLM + "%").items()}

    def remove_user(self, name: str) -> None:
        user = self.user(name)
        with self.catalog.engine.begin() as conn:
            self._keep_an_admin(conn, user.id)
            self.sessions.end_all(conn, user.id)
            conn.execute(delete(tokens).where(tokens.c.user_id == user.id))
            conn.execute(delete(memberships).where(memberships.c.user_id == user.id))
            conn.execute(delete(settings).where(settings.c.key == f"{NTLM}{user.id}"))
            conn.execute(update(source_access).where(source_access.c.owner_id == user.id).values(owner_id=None))
            conn.execute(delete(users).where(users.c.id == user.id))
        self._first_password_gone(name)
        with self._lock:
            self._tokens.clear()  # the user's tokens end now in this process, in others within TOKEN_CACHE

    def _first_password_gone(self, name: str) -> None:
        """The console's one-time password no longer signs in: the console stops showing it."""
        if name == FIRST_ADMIN and self.first_password is not None:
            self.first_password.unlink(missing_ok=True)

    def user(self, name: str) -> User:
        with self.catalog.engine.connect() as conn:
            row = conn.execute(select(*_USER).where(users.c.name == name)).first()
            if row is None:
                raise NotFound(f"no user {name!r}")
            return self._with_roles(conn, row)

    def user_by_id(self, user_id: int) -> User | None:
        with self.catalog.engine.connect() as conn:
            row = conn.execute(select(*_USER).where(users.c.id == user_id)).first()
            return self._with_roles(conn, row) if row is not None else None

    def _with_roles(self, conn: Connection, row: Row[Any, Any, Any, Any]) -> User:
        uid, name, admin = int(row[0]), str(row[1]), bool(row[2])
        q = select(groups.c.name, memberships.c.role).join(groups, groups.c.id == memberships.c.group_id)
        roles = {g: r for g, r in conn.execute(q.where(memberships.c.user_id == uid))}
        return User(uid, name, admin, roles, bool(row[3]))

    def names(self) -> dict[int, str]:
        """Every user's name by id, in one query (who requested each job of a table)."""
        with self.catalog.engine.connect() as conn:
            return {int(i): str(n) for i, n in conn.execute(select(users.c.id, users.c.name))}

    def list_users(self) -> list[User]:
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(select(*_USER).order_by(users.c.name)).all()
            return [self._with_roles(conn, r) for r in rows]

    def password_hash(self, name: str) -> str | None:
        """The stored hash of a user's password (what the WebDAV share checks against)."""
        if not isinstance(name, str) or not _NAME.match(name):
            return None  # no account has such a name: no need to ask the catalog with a megabyte of it
        with self.catalog.engine.connect() as conn:
            return conn.execute(select(users.c.password).where(users.c.name == name)).scalar()

    def count_users(self) -> int:
        with self.catalog.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(users)).scalar_one())

    def login(self, name: str, password: str) -> User:
        row = None
        if isinstance(name, str) and _NAME.match(name):
            with self.catalog.engine.connect() as conn:
                row = conn.execute(select(users.c.password).where(users.c.name == name)).first()
        # A missing user costs the same one scrypt as a wrong password: no timing tells which.
        if not _check(row[0] if row is not None else UNKNOWN, password) or row is None:
            raise BadLogin("wrong name or password")
        return self.user(name)

    # -- groups --------------------------------------------------------------

    def add_group(self, name: str) -> None:
        check_name(name, "group")
        with self.catalog.engine.begin() as conn:
            if conn.execute(select(groups.c.id).where(groups.c.name == name)).first():
                raise Exists(f"group {name!r} exists")
            conn.execute(groups.insert().values(name=name, created=time.time()))

    def group_id(self, name: str) -> int:
        with self.catalog.engine.connect() as conn:
            gid = conn.execute(select(groups.c.id).where(groups.c.name == name)).scalar()
        if gid is None:
            raise NotFound(f"no group {name!r}")
        return int(gid)

    def list_groups(self) -> dict[str, dict[str, str]]:
        """Group name -> {user name: role}."""
        with self.catalog.engine.connect() as conn:
            out: dict[str, dict[str, str]] = {g: {} for (g,) in conn.execute(select(groups.c.name))}
            q = (
                select(groups.c.name, users.c.name, memberships.c.role)
                .join(groups, groups.c.id == memberships.c.group_id)
                .join(users, users.c.id == memberships.c.user_id)
            )
            for g, u, role in conn.execute(q):
                out[g][u] = role
        return out

    def remove_group(self, name: str) -> None:
        """Remove a group: its members lose their roles in it, its sources are held by no group."""
        gid = self.group_id(name)
        with self.catalog.engine.begin() as conn:
            conn.execute(delete(memberships).where(memberships.c.group_id == gid))
            conn.execute(update(source_access).where(source_access.c.group_id == gid).values(group_id=None))
            conn.execute(delete(groups).where(groups.c.id == gid))
        with self._lock:
            self._tokens.clear()  # cached users carry their roles

    def set_role(self, group: str, user: str, role: str | None) -> None:
        """Give a user a role in a group, or take it away (None)."""
        if role is not None and role not in ROLES:
            raise InvalidArgument(f"a role is one of {', '.join(ROLES)}")
        gid, uid = self.group_id(group), self.user(user).id
        with self.catalog.engine.begin() as conn:
            conn.execute(delete(memberships).where(memberships.c.group_id == gid, memberships.c.user_id == uid))
            if role is not None:
                conn.execute(memberships.insert().values(group_id=gid, user_id=uid, role=role))

    # -- sources: which group holds one, who owns it -------------------------

    def assign_source(self, source: str, group: str | None, owner: str | None) -> None:
        gid = self.group_id(group) if group else None
        uid = self.user(owner).id if owner else None
        with self.catalog.engine.begin() as conn:
            sid = conn.execute(select(sources.c.id).where(sources.c.name == source)).scalar()
            if sid is None:
                raise NotFound(f"no source {source!r}")
            conn.execute(delete(source_access).where(source_access.c.source_id == sid))
            conn.execute(source_access.insert().values(source_id=sid, group_id=gid, owner_id=uid))

    def source_access(self) -> dict[str, tuple[str | None, str | None]]:
        """Source name -> (group name, owner name), for every source."""
        q = (
            select(sources.c.name, groups.c.name, users.c.name)
            .select_from(sources)
            .join(source_access, source_access.c.source_id == sources.c.id, isouter=True)
            .join(groups, groups.c.id == source_access.c.group_id, isouter=True)
            .join(users, users.c.id == source_access.c.owner_id, isouter=True)
        )
        with self.catalog.engine.connect() as conn:
            return {s: (g, o) for s, g, o in conn.execute(q)}

    # -- API tokens ----------------------------------------------------------

    def add_token(self, user: User, name: str) -> str:
        token = "cairn_" + secrets.token_urlsafe(32)
        with self.catalog.engine.begin() as conn:
            conn.execute(tokens.insert().values(user_id=user.id, name=name[:255], digest=_digest(token),
                                                created=time.time()))  # fmt: skip
        return token

    def token_user(self, token: str) -> User | None:
        """The token's user. Checks are remembered for TOKEN_CACHE seconds, and `last_used` is
        written at most once a minute: a script's every request would otherwise be a catalog write."""
        digest = _digest(token)
        now = time.monotonic()
        with self._lock:
            cached = self._tokens.get(digest)
        if cached is not None and now - cached[1] < TOKEN_CACHE:
            return cached[0]
        with self.catalog.engine.connect() as conn:
            row = conn.execute(select(tokens.c.id, tokens.c.user_id, tokens.c.last_used)
                               .where(tokens.c.digest == digest)).first()  # fmt: skip
        if row is None:
            return None
        if row[2] is None or time.time() - row[2] > 60:
            with self.catalog.engine.begin() as conn:
                conn.execute(update(tokens).where(tokens.c.id == row[0]).values(last_used=time.time()))
        user = self.user_by_id(row[1])
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            if user is not None:
                self._tokens[digest] = (user, now)
        return user

    def list_tokens(self, user: User) -> list[dict[str, object]]:
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(select(tokens.c.id, tokens.c.name, tokens.c.created, tokens.c.last_used)
                                .where(tokens.c.user_id == user.id).order_by(tokens.c.id))  # fmt: skip
            return [{"id": i, "name": n, "created": c, "last_used": lu} for i, n, c, lu in rows]

    def remove_token(self, user: User, token_id: int) -> None:
        with self._lock:
            self._tokens.clear()  # this process forgets at once; others within TOKEN_CACHE seconds
        with self.catalog.engine.begin() as conn:
            done = conn.execute(delete(tokens).where(tokens.c.id == token_id, tokens.c.user_id == user.id))
        if not done.rowcount:
            raise NotFound(f"no token {token_id}")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
