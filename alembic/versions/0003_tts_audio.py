"""text-to-speech audio files (issue 16)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tts_audio",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("session_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("voice", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("format", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("audio", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tts_audio", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tts_audio_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_tts_audio_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tts_audio", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tts_audio_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_tts_audio_expires_at"))
    op.drop_table("tts_audio")
