"""a job's log lines, and a request to stop a running job

Revision ID: 0007
Revises: 0006

`log` holds a job's lines as a JSON list of [time, text]: started, each step
it reports, how it ended. `stop_by` names who asked a running job to stop;
the job stops at its next safe point.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("log", sa.Text()))
        batch.add_column(sa.Column("stop_by", sa.String(length=255)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stop_by")
        batch.drop_column("log")
