"""word timings and confidence on transcript lines; words option on sessions (issue 17)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 06:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel  # noqa: F401

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns (older lines read NULL: no word timings, no confidence) and a
    # boolean with a server default: SQLite adds them in place, without copying a table.
    with op.batch_alter_table("transcript_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("words", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("confidence", sa.Float(), nullable=True))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("words", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("words")
    with op.batch_alter_table("transcript_lines", schema=None) as batch_op:
        batch_op.drop_column("confidence")
        batch_op.drop_column("words")
