"""Initial ledger: events, cursors, users, passes, leases, owners.

Revision ID: 0001
Revises:
Create Date: 2025-01-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATES = (
    "billed_locked",
    "booked",
    "failed_permanent",
    "failed_transient",
    "in_doubt",
    "pending",
    "retracted",
    "skipped",
)
USER_STATUSES = ("active", "auth_required", "paused")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _create_events() -> None:
    op.create_table(
        "events",
        sa.Column("user", sa.String(320), nullable=False),
        sa.Column("event_id", sa.String(512), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("project_id", sa.String(255)),
        sa.Column("task_id", sa.String(255)),
        sa.Column("entry_id", sa.String(255)),
        sa.Column("start", sa.DateTime(timezone=True)),
        sa.Column("end", sa.DateTime(timezone=True)),
        sa.Column("all_day", sa.Boolean(), nullable=False),
        sa.Column("series_master_id", sa.String(512)),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("booked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("user", "event_id", name="pk_events"),
        sa.CheckConstraint(_in("state", STATES), name="ck_events_state"),
    )
    op.create_index("ix_events_user_state", "events", ["user", "state"])


def _create_cursors_and_users() -> None:
    op.create_table(
        "cursors",
        sa.Column("user", sa.String(320), nullable=False),
        sa.Column("delta_link", sa.Text()),
        sa.Column("window_start", sa.DateTime(timezone=True)),
        sa.Column("window_end", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user", name="pk_cursors"),
    )
    op.create_table(
        "users",
        sa.Column("user", sa.String(320), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True)),
        sa.Column("reason", sa.Text()),
        sa.Column("last_pass_at", sa.DateTime(timezone=True)),
        sa.Column("last_success_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text()),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_summary", sa.JSON()),
        sa.PrimaryKeyConstraint("user", name="pk_users"),
        sa.CheckConstraint(_in("status", USER_STATUSES), name="ck_users_status"),
    )
    op.create_table(
        "passes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user", sa.String(320), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("summary", sa.JSON()),
        sa.PrimaryKeyConstraint("id", name="pk_passes"),
    )
    op.create_index("ix_passes_user_id", "passes", ["user", "id"])


def _create_leases() -> None:
    op.create_table(
        "leases",
        sa.Column("user", sa.String(320), nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("fence", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user", name="pk_leases"),
    )
    op.create_table(
        "owners",
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", name="pk_owners"),
    )


def upgrade() -> None:
    _create_events()
    _create_cursors_and_users()
    _create_leases()


def downgrade() -> None:
    for table in ("owners", "leases", "passes", "users", "cursors", "events"):
        op.drop_table(table)
