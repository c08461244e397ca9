"""idempotent finals: a commit key per final (issue 13)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 12:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A final's commit is retried when the database goes away; if the first attempt's
    # COMMIT landed and only its answer was lost, the key finds the line instead of
    # storing it twice. NULL on older lines and explicit-seq writers (NULLs are
    # distinct in the unique index on both PostgreSQL and SQLite).
    with op.batch_alter_table("transcript_lines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("commit_key", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
    op.create_index(
        "uq_lines_session_commit",
        "transcript_lines",
        ["session_id", "commit_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_lines_session_commit", table_name="transcript_lines")
    with op.batch_alter_table("transcript_lines", schema=None) as batch_op:
        batch_op.drop_column("commit_key")
