"""SQLAlchemy models of the ledger tables.

The migrations in ``migrations/versions`` create exactly these tables; a test
compares the two so they cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from syncd.ledger._types import USER_STATUSES, State

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC instants in, aware UTC instants out, on every database.

    SQLite has no time zones: values are stored as naive UTC text, which
    also keeps ``<=`` comparisons in SQL correct.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the ledger stores aware UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _in(column: str, values: frozenset[str] | type[State]) -> str:
    quoted = ", ".join(f"'{v}'" for v in sorted(str(v) for v in values))
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class EventRow(Base):
    """One (user, Graph event id): decision, state, InLoox entry."""

    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint(_in("state", State), name="state"),
        Index("ix_events_user_state", "user", "state"),
    )

    user: Mapped[str] = mapped_column(String(320), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    project_id: Mapped[str | None] = mapped_column(String(255))
    task_id: Mapped[str | None] = mapped_column(String(255))
    entry_id: Mapped[str | None] = mapped_column(String(255))
    start: Mapped[datetime | None]
    end: Mapped[datetime | None]
    all_day: Mapped[bool] = mapped_column(Boolean, default=False)
    series_master_id: Mapped[str | None] = mapped_column(String(512))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    booked_at: Mapped[datetime | None]


class CursorRow(Base):
    """A user's delta link and the window of its round."""

    __tablename__ = "cursors"

    user: Mapped[str] = mapped_column(String(320), primary_key=True)
    delta_link: Mapped[str | None] = mapped_column(Text)
    window_start: Mapped[datetime | None]
    window_end: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class UserRow(Base):
    """A user's pause state and the outcome of its latest passes."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("status", USER_STATUSES), name="status"),)

    user: Mapped[str] = mapped_column(String(320), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), default="active")
    paused_until: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    last_pass_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class PassRow(Base):
    """One finished pass; the latest few per user are kept for `syncd status`."""

    __tablename__ = "passes"
    __table_args__ = (Index("ix_passes_user_id", "user", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(320))
    at: Mapped[datetime]
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class LeaseRow(Base):
    """Which process serves a user, until when, and its fencing counter."""

    __tablename__ = "leases"

    user: Mapped[str] = mapped_column(String(320), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime | None]
    fence: Mapped[int] = mapped_column(Integer, default=0)


class OwnerRow(Base):
    """A live syncd process, known by its latest heartbeat."""

    __tablename__ = "owners"

    owner: Mapped[str] = mapped_column(String(255), primary_key=True)
    heartbeat_at: Mapped[datetime]


EVENTS = Base.metadata.tables[EventRow.__tablename__]
CURSORS = Base.metadata.tables[CursorRow.__tablename__]
USERS = Base.metadata.tables[UserRow.__tablename__]
PASSES = Base.metadata.tables[PassRow.__tablename__]
LEASES = Base.metadata.tables[LeaseRow.__tablename__]
OWNERS = Base.metadata.tables[OwnerRow.__tablename__]
