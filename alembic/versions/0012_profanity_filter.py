"""profanity filter on tenants and sessions (issue 17)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 06:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel  # noqa: F401

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The tenant's default is nullable (older rows: no default, i.e. "off"); a session
    # stores the mode it resolved at creation, "off" for every older session. SQLite
    # adds both in place (a nullable column, a constant server default).
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("profanity_filter", sa.String(length=8), nullable=True))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("profanity_filter", sa.String(length=8), nullable=False, server_default="off")
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("profanity_filter")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("profanity_filter")
