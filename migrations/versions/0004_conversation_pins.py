"""Conversation pins: the provider key that holds a conversation's state, or that served a
client's session last.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_pins",
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("provider_key_id", sa.Integer(), nullable=False),
        sa.Column("client_key_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope"),
    )
    op.create_index(
        "ix_conversation_pins_updated_at", "conversation_pins", ["updated_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_conversation_pins_updated_at", table_name="conversation_pins")
    op.drop_table("conversation_pins")
