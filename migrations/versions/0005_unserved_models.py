"""Provider keys remember the models their upstream said it does not have.

A key's catalog (gateway/keys/catalog.py) is its declared models, else what its test
discovered, else its provider's list. Keys saved before this revision keep the models
they were stored with: a key added without models was stored as ["*"] (any model), and
that cannot be told apart from a `*` the admin chose, so those keys go on serving any
model until an admin sets `models` to [] (use the discovered list) or to model ids.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("provider_keys") as table:
        table.add_column(sa.Column("unserved_models", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("provider_keys") as table:
        table.drop_column("unserved_models")
