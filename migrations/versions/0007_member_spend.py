"""Members keep a running total of what their keys' requests cost.

A member's request was admitted against `balance + lifetime spend`, and the spend was
summed from the request log on every request: a cost that grew with the member's history.
`members.spent_micros` holds that sum; the booking adds each request's cost to it in the
statement that takes it off the balance. Existing members start from their request log.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "members",
        sa.Column("spent_micros", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute(
        "UPDATE members SET spent_micros = COALESCE(("
        "SELECT SUM(request_logs.cost_micros) FROM request_logs "
        "JOIN client_keys ON client_keys.id = request_logs.client_key_id "
        "WHERE client_keys.member_id = members.user_id), 0)"
    )


def downgrade() -> None:
    with op.batch_alter_table("members") as table:
        table.drop_column("spent_micros")
