"""speaker names per session (issue 14)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 03:25:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "speakers",
        sa.Column("session_id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("speaker_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("session_id", "speaker_id"),
    )


def downgrade() -> None:
    op.drop_table("speakers")
