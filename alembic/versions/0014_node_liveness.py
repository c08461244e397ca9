"""node heartbeats for fast dead-claim detection (issue 13)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 06:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per running node process, renewed by its heartbeat; producer claims name
    # their node (nullable: rows claimed before this revision rely on their lease alone).
    op.create_table(
        "nodes",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("producer_node", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
    with op.batch_alter_table("producer_tracks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("producer_tracks", schema=None) as batch_op:
        batch_op.drop_column("node_id")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("producer_node")
    op.drop_table("nodes")
