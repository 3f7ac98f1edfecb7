"""Small SQL helpers shared by the ledger's parts."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Row, Table
from sqlalchemy.dialects import postgresql, sqlite

from syncd.errors import LeaseLost
from syncd.ledger._schema import EVENTS, LEASES
from syncd.ledger._types import Record, State


def upsert(connection: Connection, table: Table) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def instant(value: datetime | date | None) -> datetime | None:
    """An aware UTC instant; a date becomes midnight UTC of that date."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the ledger stores aware UTC")
    return value.astimezone(UTC)


_RECORD_FIELDS = tuple(Record.__dataclass_fields__)


def record(row: Row[Any]) -> Record:
    mapping = row._mapping
    values = {name: mapping[name] for name in _RECORD_FIELDS}
    values["state"] = State(values["state"])
    values["all_day"] = bool(values["all_day"])
    return Record(**values)


def event_key(user: str, event_id: str) -> Any:
    return (EVENTS.c.user == user) & (EVENTS.c.event_id == event_id)


def check_fence(
    connection: Connection, user: str, fence: int | None, now: datetime
) -> None:
    """Raise LeaseLost unless ``fence`` is still the user's live lease.

    The row is share-locked until the caller's transaction ends, so nobody
    can take the lease over between this check and the caller's write.
    """
    if fence is None or connection.dialect.name != "postgresql":
        return
    row = connection.execute(
        LEASES.select().where(LEASES.c.user == user).with_for_update(read=True)
    ).first()
    if row is None or row.fence != fence:
        raise LeaseLost(f"lease fence {fence} is no longer current", user=user)
    if row.expires_at is None or row.expires_at <= now:
        raise LeaseLost(f"lease fence {fence} has expired", user=user)
