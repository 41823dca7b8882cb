"""the name index: every path of a source's snapshots, for searching by name

Revision ID: 0008
Revises: 0007

Four tables (engine/nameindex.py): folders and names of each source, one
row per version of a path with the range of snapshots that hold it, and
the newest snapshot indexed. Snapshots taken before this revision are
indexed the first time their source is searched.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _source() -> sa.Column:
    return sa.Column("source_id", sa.Integer(), sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "index_dirs",
        sa.Column("id", sa.Integer(), primary_key=True),
        _source(),
        sa.Column("path", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("source_id", "path"),
    )
    op.create_table(
        "index_names",
        sa.Column("id", sa.Integer(), primary_key=True),
        _source(),
        sa.Column("name", sa.LargeBinary(), nullable=False),
        sa.Column("folded", sa.Text(), nullable=False),
        sa.UniqueConstraint("source_id", "name"),
    )
    op.create_table(
        "index_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        _source(),
        sa.Column("dir_id", sa.Integer(), nullable=False),
        sa.Column("name_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("first_id", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.Integer()),
    )
    op.create_index("ix_index_versions_path", "index_versions", ["source_id", "dir_id", "name_id"])
    op.create_index("ix_index_versions_name", "index_versions", ["name_id"])
    op.create_index("ix_index_versions_last", "index_versions", ["source_id", "last_id"])
    op.create_table(
        "index_heads",
        sa.Column("source_id", sa.Integer(), sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
    )


def downgrade() -> None:
    for table in ("index_heads", "index_versions", "index_names", "index_dirs"):
        op.drop_table(table)
