"""Opening the catalog: SQLite (WAL) by default, PostgreSQL through psycopg 3.

A SQLite catalog is created 0600 before SQLite first opens it, and SQLite
gives its -wal and -shm files the database file's mode. Settings that hold
secrets are sealed with a key of the deployment's once it is unlocked (see
`Sealer` in keyring.py); callers read and write them in plain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Table, create_engine, delete, event, make_url, select, text, update
from sqlalchemy.exc import DatabaseError
from sqlalchemy.pool import NullPool

from .. import private
from ..errors import Locked, NoSpace, NotFound
from ..keyring import SEALED

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test checks they agree). A
# catalog already there skips Alembic, whose import alone costs 0.1 s a command.
HEAD = "0008"


def secret_setting(key: str) -> bool:
    """Whether a settings row holds a secret: the mail server's, the UI's signing key, an rsync daemon's password,
    an account's SMB password hash."""
    return key.endswith("/smtp") or key == "web.secret" or key.startswith(("door/secret/", "door/ntlm/"))


class Sealer(Protocol):
    def seal(self, name: str, plain: str) -> str: ...

    def unseal(self, name: str, stored: str) -> str: ...


class Catalog:
    """The catalog's SQLAlchemy engine. Thread-safe: connections come from its pool.

    `sealer` is set once, when the deployment is unlocked, before other threads use the catalog.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.sealer: Sealer | None = None
        # (statement, dialect) -> its SQL and parameter order, for `fetch` with params; a dict's
        # get and set are atomic, and two threads compiling one statement at once agree.
        self._compiled: dict[tuple[Any, str], tuple[str, Sequence[str] | None]] = {}

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def insert_ignore(self, conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]]) -> int:
        """INSERT … ON CONFLICT DO NOTHING: idempotent, for blobs that two writers add; the rows added."""
        rows = list(rows)
        if not rows:
            return 0
        # Imported here: the PostgreSQL dialect costs 25 ms of start-up for SQLite users.
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql as dialect
        else:
            from sqlalchemy.dialects import sqlite as dialect  # type: ignore[no-redef]
        statement = dialect.insert(table).on_conflict_do_nothing()
        if len(rows) == 1:  # SQLAlchemy's rowcount of one row is exact on every driver: swap_setting counts on it
            return conn.execute(statement, rows).rowcount
        return self.executemany(conn, statement, rows, columns=list(rows[0]))

    def executemany(self, conn: Connection, statement: Any, rows: Sequence[Mapping[str, Any]],
                    columns: list[str] | None = None) -> int:  # fmt: skip
        """Run one statement for many rows straight through the driver; the rows it changed.

        SQLAlchemy's own executemany spends about 15 µs a row binding
        parameters; the working tree commits thousands of rows at a time.
        `columns`: those an INSERT without values sets (else all of them).
        """
        if not rows:
            return 0
        compiled = statement.compile(dialect=conn.dialect, column_keys=columns)
        names = compiled.positiontup
        params: Any = rows
        if names:  # itemgetter of one name gives the value, not a 1-tuple
            params = list(map(itemgetter(*names), rows)) if len(names) > 1 else [(r[names[0]],) for r in rows]
        return int(conn.exec_driver_sql(str(compiled), params).rowcount)

    def fetch(self, conn: Connection, statement: Any, params: Mapping[str, Any] | None = None) -> list[Any]:
        """All rows of a query as plain tuples, straight from the driver.

        With `params` (values of the statement's named bind parameters) the SQL is compiled once, for a
        query asked often: compiling a join costs 0.6 ms, its rows from SQLite 0.4 ms per hundred.
        """
        if params is not None:
            known = self._compiled.get((statement, conn.dialect.name))
            if known is None:
                compiled = statement.compile(dialect=conn.dialect)
                known = self._compiled[(statement, conn.dialect.name)] = (str(compiled), compiled.positiontup)
            sql, names = known
            return list(conn.exec_driver_sql(sql, tuple(params[n] for n in names) if names else dict(params)))
        compiled = statement.compile(dialect=conn.dialect)
        names = compiled.positiontup
        params = compiled.params
        return list(conn.exec_driver_sql(str(compiled), tuple(params[n] for n in names) if names else params))

    @staticmethod
    def source_id(conn: Connection, name: str) -> int:
        """A source's id by its name; NotFound if there is none."""
        from .schema import sources

        sid = conn.execute(select(sources.c.id).where(sources.c.name == name)).scalar()
        if sid is None:
            raise NotFound(f"no source {name!r}")
        return int(sid)

    @staticmethod
    def insert_id(conn: Connection, statement: Any) -> int:
        """Run an INSERT and return the new row's integer primary key."""
        key = conn.execute(statement).inserted_primary_key
        assert key is not None
        return int(key[0])

    def setting(self, key: str) -> str | None:
        """A row of the settings table (flags, summaries, schedules: small values by key)."""
        from .schema import settings

        with self.engine.connect() as conn:
            value = conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
        return None if value is None else self.unseal(key, str(value))

    def settings_like(self, pattern: str) -> dict[str, str]:
        """Every settings row whose key is LIKE `pattern`, secrets in plain."""
        from .schema import settings

        with self.engine.connect() as conn:
            rows = conn.execute(select(settings.c.key, settings.c.value).where(settings.c.key.like(pattern)))
            return {k: self.unseal(k, v) for k, v in rows}

    def seal(self, key: str, value: str) -> str:
        """A settings value as stored: sealed if it is a secret and the deployment has a key for it."""
        return self.sealer.seal(key, value) if self.sealer is not None and secret_setting(key) else value

    def unseal(self, key: str, value: str) -> str:
        if not value.startswith(SEALED):
            return value  # written before the deployment had a sealer, or not a secret
        if self.sealer is None:
            raise Locked(f"setting {key!r} is encrypted with the deployment's key: unlock the deployment")
        return self.sealer.unseal(key, value)

    def seal_secrets(self) -> list[str]:
        """Seal the secret settings still stored in plain (written before the deployment had a sealer)."""
        from .schema import settings

        if self.sealer is None:
            return []
        with self.engine.begin() as conn:
            rows = conn.execute(select(settings.c.key, settings.c.value)).all()
            plain = [(k, v) for k, v in rows if secret_setting(k) and not v.startswith(SEALED)]
            for k, v in plain:
                conn.execute(update(settings).where(settings.c.key == k).values(value=self.seal(k, v)))
        return [k for k, _ in plain]

    def set_setting(self, key: str, value: str | None) -> None:
        """Replace a settings row; None removes it."""
        from .schema import settings

        with self.engine.begin() as conn:
            conn.execute(delete(settings).where(settings.c.key == key))
            if value is not None:
                conn.execute(settings.insert().values(key=key, value=self.seal(key, value)))

    def swap_setting(self, key: str, old: str | None, new: str) -> bool:
        """Set a row to `new` only if it still holds `old` (None: absent); whether this call did it.

        Two appliances on one catalog race for the same change (a scheduled
        run); exactly one of them wins.
        """
        from .schema import settings

        if secret_setting(key):
            raise ValueError(f"{key!r} holds a secret: its sealed value cannot be compared")
        with self.engine.begin() as conn:
            if old is None:
                return self.insert_ignore(conn, settings, [{"key": key, "value": new}]) == 1
            changed = conn.execute(
                update(settings).where(settings.c.key == key, settings.c.value == old).values(value=new)
            )
            return changed.rowcount == 1

    def dispose(self) -> None:
        self.engine.dispose()


def open_catalog(url: str, *, migrate: bool = True) -> Catalog:
    """Connect and bring the schema to the newest revision."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:" and Path(database).parent.is_dir():
            private.create_file(Path(database))  # before SQLite creates it with the umask's 0644
        engine = create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False},
            poolclass=NullPool if url.endswith(":memory:") else None,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
    event.listen(engine, "handle_error", _disk_full)
    catalog = Catalog(engine)
    if migrate and current_revision(catalog) != HEAD:
        upgrade(catalog)
    return catalog


def current_revision(catalog: Catalog) -> str | None:
    try:
        with catalog.engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DatabaseError:
        return None  # a new, empty catalog


SQLITE_FULL, PG_DISK_FULL = 13, "53100"


def _disk_full(context: Any) -> None:
    """A catalog whose disk is full is NoSpace, as a full pool is: writers answer ENOSPC or 507, and the
    background commit waits with a warning, instead of an error and a traceback each retry."""
    e = context.original_exception
    if getattr(e, "sqlite_errorcode", None) == SQLITE_FULL or getattr(e, "sqlstate", None) == PG_DISK_FULL:
        raise NoSpace(f"the catalog's disk is full: {e}") from e


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed snapshot survives power loss, not just a crash.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(catalog: Catalog) -> None:
    from alembic import command

    cfg = alembic_config()
    with catalog.engine.begin() as conn:
        if catalog.dialect == "sqlite":
            # Python's sqlite3 runs DDL outside any transaction unless one is open: without this, a
            # process killed mid-migration leaves half a schema that the next start cannot upgrade.
            conn.exec_driver_sql("BEGIN")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
