"""web sessions kept in the catalog; user ids never handed out again

Revision ID: 0004
Revises: 0003

A signed-in browser's cookie carries a random token; the catalog keeps its
SHA-256 in `web_sessions`, so a session can be ended on the server. The
cookie-signing key (`web.secret`) signs nothing any more and is removed.

On SQLite a deleted row's id can come back (the highest id plus one), so a
removed user's id could go to the next user. AUTOINCREMENT forbids that,
and adding it means rebuilding `users`. Migrations run in one transaction,
where SQLite cannot turn foreign keys off, so dropping the old table
performs its ON DELETE actions: memberships and tokens go, owners and
requesters become NULL. They are copied aside first and put back once the
new table holds the same ids. PostgreSQL's sequences never reuse an id.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# What dropping `users` would take with it, saved as (name, what to copy, how to put it back).
_KEPT = [
    ("kept_memberships", "SELECT * FROM memberships", "INSERT INTO memberships SELECT * FROM kept_memberships"),
    ("kept_tokens", "SELECT * FROM tokens", "INSERT INTO tokens SELECT * FROM kept_tokens"),
    (
        "kept_owners",
        "SELECT source_id, owner_id FROM source_access WHERE owner_id IS NOT NULL",
        "UPDATE source_access SET owner_id = (SELECT owner_id FROM kept_owners k"
        " WHERE k.source_id = source_access.source_id)"
        " WHERE source_id IN (SELECT source_id FROM kept_owners)",
    ),
    (
        "kept_requesters",
        "SELECT id, requested_by FROM jobs WHERE requested_by IS NOT NULL",
        "UPDATE jobs SET requested_by = (SELECT requested_by FROM kept_requesters k WHERE k.id = jobs.id)"
        " WHERE id IN (SELECT id FROM kept_requesters)",
    ),
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_users_autoincrement()
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.execute("DELETE FROM settings WHERE key = 'web.secret'")


def _sqlite_users_autoincrement() -> None:
    op.execute(
        "CREATE TABLE users_new (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, name VARCHAR(255) NOT NULL UNIQUE,"
        " password TEXT NOT NULL, admin BOOLEAN NOT NULL, created FLOAT NOT NULL)"
    )
    op.execute("INSERT INTO users_new (id, name, password, admin, created) SELECT id, name, password, admin, created"
               " FROM users")  # fmt: skip
    for table, select, _ in _KEPT:
        op.execute(f"CREATE TEMP TABLE {table} AS {select}")
    op.execute("DROP TABLE users")
    op.execute("ALTER TABLE users_new RENAME TO users")
    for table, _, restore in _KEPT:
        op.execute(restore)
        op.execute(f"DROP TABLE {table}")


def downgrade() -> None:
    op.drop_index("ix_web_sessions_user_id", table_name="web_sessions")
    op.drop_table("web_sessions")
