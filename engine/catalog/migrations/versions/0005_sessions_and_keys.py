"""backup sessions and the SSH keys of sources

Revision ID: 0005
Revises: 0004

A session is one client connection through a front door (rsync over SSH, the
rsync daemon) that wrote into a source: its client, start, end, bytes and
outcome. `source_keys` holds the public keys a source's clients log in with.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source_id", sa.Integer(), sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
        sa.Column("door", sa.String(length=16), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("principal", sa.String(length=255), nullable=False),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("ended", sa.Float()),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("bytes_received", sa.BigInteger()),
        sa.Column("files_changed", sa.BigInteger()),
        sa.Column("snapshot", sa.String(length=255)),
        sa.Column("owner", sa.String(length=255), nullable=False),
    )
    op.create_index("ix_sessions_source_id", "sessions", ["source_id"])
    op.create_index("ix_sessions_state", "sessions", ["state"])
    op.create_table(
        "source_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source_id", sa.Integer(), sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False, unique=True),
        sa.Column("created", sa.Float(), nullable=False),
    )
    op.create_index("ix_source_keys_source_id", "source_keys", ["source_id"])


def downgrade() -> None:
    op.drop_index("ix_source_keys_source_id", "source_keys")
    op.drop_table("source_keys")
    op.drop_index("ix_sessions_state", "sessions")
    op.drop_index("ix_sessions_source_id", "sessions")
    op.drop_table("sessions")
