"""A flat price per request for a model (price overrides), for models no token price fits.

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("price_overrides") as table:
        table.add_column(sa.Column("per_request", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("price_overrides") as table:
        table.drop_column("per_request")
