"""language hints, keywords, noise reduction on tenants and sessions (issue 15)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 03:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel  # noqa: F401

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable JSON columns (older rows read NULL: no hints, no keywords) and a boolean
    # with a server default: SQLite adds all three in place, without copying the table.
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("keywords", sa.JSON(), nullable=True))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language_hints", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("keywords", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("reduce_noise", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("reduce_noise")
        batch_op.drop_column("keywords")
        batch_op.drop_column("language_hints")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("keywords")
