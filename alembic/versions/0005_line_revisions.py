"""transcript line revisions (corrections, issue 16)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 03:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "line_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("author", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "seq", "revision", name="uq_line_revisions_seq_revision"),
    )
    # A nullable column: SQLite adds it in place (no table copy), existing lines read NULL.
    with op.batch_alter_table("transcript_lines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("revised_text", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("transcript_lines", schema=None) as batch_op:
        batch_op.drop_column("revised_text")
    op.drop_table("line_revisions")
