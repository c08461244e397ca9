"""file transcription: sessions made from files (issue 15)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 03:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Files waiting for their transcription job, in slices (any node runs the job).
    op.create_table(
        "file_audio_chunks",
        sa.Column("audio_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("audio_id", "idx"),
    )


def downgrade() -> None:
    op.drop_table("file_audio_chunks")
