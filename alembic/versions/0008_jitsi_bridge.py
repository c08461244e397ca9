"""Jitsi bridge credentials and session mapping (issue 14)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 03:25:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bridge_keys",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("key_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("key_prefix", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("bridge_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bridge_keys_key_hash"), ["key_hash"], unique=True)
        batch_op.create_index(batch_op.f("ix_bridge_keys_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "jitsi_sessions",
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("jitsi_session_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("session_id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "jitsi_session_id"),
    )
    with op.batch_alter_table("jitsi_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_jitsi_sessions_session_id"), ["session_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("jitsi_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jitsi_sessions_session_id"))
    op.drop_table("jitsi_sessions")
    with op.batch_alter_table("bridge_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bridge_keys_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_bridge_keys_key_hash"))
    op.drop_table("bridge_keys")
