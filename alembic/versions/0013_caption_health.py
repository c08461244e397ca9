"""caption latency figures on sessions (issue 17)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 06:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel  # noqa: F401

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One nullable JSON column (the session state's ``latency`` document, written by the
    # node running the session's pipeline): older rows read NULL, "no figures yet", and
    # SQLite adds it in place without copying the table.
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("caption_latency", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("caption_latency")
