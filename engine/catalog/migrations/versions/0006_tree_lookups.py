"""lookups a lazily loaded working tree makes

Revision ID: 0006
Revises: 0005

A working tree loads directories when they are used, so two lookups that a
whole-tree load did by scanning need indexes: the names of an inode (its
parent directories, `dirents` by inode number) and the rows written while
their chunks were pending (checked on every load). Rows of inodes without a
name, which a crash could leave behind, are removed once: a commit no longer
writes them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_dirents_ino", "dirents", ["source_id", "ino"])
    pending = sa.text("pending")
    op.create_index(
        "ix_inodes_pending", "inodes", ["source_id"], sqlite_where=pending, postgresql_where=pending
    )
    op.execute(
        "DELETE FROM inodes WHERE ino <> 1 AND NOT EXISTS "
        "(SELECT 1 FROM dirents WHERE dirents.source_id = inodes.source_id AND dirents.ino = inodes.ino)"
    )


def downgrade() -> None:
    op.drop_index("ix_inodes_pending", "inodes")
    op.drop_index("ix_dirents_ino", "dirents")
