"""participant tracks: per-participant producer claims (issue 14)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 03:25:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "producer_tracks",
        sa.Column("session_id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("participant_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("ingest_jti", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("producer_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("session_id", "participant_id"),
    )
    with op.batch_alter_table("producer_tracks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_producer_tracks_tenant_lease", ["tenant_id", "lease_until"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("producer_tracks", schema=None) as batch_op:
        batch_op.drop_index("ix_producer_tracks_tenant_lease")
    op.drop_table("producer_tracks")
