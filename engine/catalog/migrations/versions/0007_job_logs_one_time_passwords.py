"""a job's log lines, a request to stop a running job, one-time passwords

Revision ID: 0007
Revises: 0006

`log` holds a job's lines as a JSON list of [time, text]: started, each step
it reports, how it ended. `stop_by` names who asked a running job to stop;
the job stops at its next safe point. `users.must_change` marks a one-time
password (the first administrator's, a reset's): the web UI and the API ask
for a new one before anything else.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch copy: on SQLite a copied `users` would lose AUTOINCREMENT, and a
    # removed user's id could be handed out again.
    op.add_column("jobs", sa.Column("log", sa.Text()))
    op.add_column("jobs", sa.Column("stop_by", sa.String(length=255)))
    op.add_column("users", sa.Column("must_change", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("users", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("must_change")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stop_by")
        batch.drop_column("log")
