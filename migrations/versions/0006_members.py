"""Members: people who sign up (or are invited, or sign in with SSO) and spend their own
keys and credits.

Users gain an email (members sign in with it); a `members` row holds a member's balance,
budget, limits, key allowance, profile and suspension; client keys and credit
transactions may name their member; invites are one-time sign-up links; member tokens
are members' personal access tokens. Existing rows are untouched: every new column is
nullable.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email", sa.String(length=254), nullable=True))
    op.create_index("ix_users_email", "users", ["email"], unique=True)
    op.create_table(
        "members",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("balance_micros", sa.BigInteger(), nullable=False),
        sa.Column("budget_micros", sa.BigInteger(), nullable=True),
        sa.Column("budget_period", sa.String(length=8), nullable=True),
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        sa.Column("max_keys", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("suspended_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["profile_id"], ["profiles.id"]),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_index("ix_members_profile_id", "members", ["profile_id"], unique=False)
    op.create_table(
        "invites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("used_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["used_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "member_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_hint", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_member_tokens_user_id", "member_tokens", ["user_id"], unique=False)
    # SQLite adds a column with its REFERENCES clause in place (no table rebuild, so
    # client_keys keeps its AUTOINCREMENT); PostgreSQL adds the constraint after. No ON
    # DELETE rule (SQLite does not report one on such a column): deleting a member
    # deletes their keys and unlinks their payments first (gateway/admin/members.py).
    for table in ("client_keys", "credit_transactions"):
        _add_member_id(table)


def _add_member_id(table: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"ALTER TABLE {table} ADD COLUMN member_id INTEGER REFERENCES users (id)")
    else:
        op.add_column(table, sa.Column("member_id", sa.Integer(), nullable=True))
        op.create_foreign_key(f"{table}_member_id_fkey", table, "users", ["member_id"], ["id"])
    op.create_index(f"ix_{table}_member_id", table, ["member_id"], unique=False)


def downgrade() -> None:
    for table in ("credit_transactions", "client_keys"):
        op.drop_index(f"ix_{table}_member_id", table_name=table)
        with op.batch_alter_table(table, table_kwargs=_kwargs(table)) as batch:
            batch.drop_column("member_id")
    op.drop_index("ix_member_tokens_user_id", table_name="member_tokens")
    op.drop_table("member_tokens")
    op.drop_table("invites")
    op.drop_index("ix_members_profile_id", table_name="members")
    op.drop_table("members")
    op.drop_index("ix_users_email", table_name="users")
    with op.batch_alter_table("users", table_kwargs=_kwargs("users")) as batch:
        batch.drop_column("email")


def _kwargs(table: str) -> dict:
    """A rebuilt table keeps AUTOINCREMENT where 0002 gave it (SQLite)."""
    return {"sqlite_autoincrement": True} if table in ("users", "client_keys") else {}
