"""The per-user report behind `syncd status`: plain, JSON-able dicts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, union

from syncd.ledger._schema import CURSORS, EVENTS, LEASES, PASSES, USERS
from syncd.ledger._types import FAILURES, State

RECENT_FAILURES = 10
RECENT_PASSES = 5


def known_users(connection: Connection) -> list[str]:
    """Every user the ledger has heard of, in order."""
    everyone = union(
        select(EVENTS.c.user), select(USERS.c.user), select(CURSORS.c.user)
    ).subquery()
    return sorted(connection.execute(select(everyone.c.user)).scalars())


def report(connection: Connection, users: Sequence[str]) -> list[dict[str, Any]]:
    counts = _state_counts(connection, users)
    reasons = _skip_reasons(connection, users)
    return [
        {
            **_standing(connection, user),
            "lease": _lease(connection, user),
            "counts": counts[user],
            "skip_reasons": reasons[user],
            "recent_failures": _recent_failures(connection, user),
            "recent_failed_passes": _recent_failed_passes(connection, user),
        }
        for user in users
    ]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _standing(connection: Connection, user: str) -> dict[str, Any]:
    row = connection.execute(select(USERS).where(USERS.c.user == user)).first()
    if row is None:
        return {
            "user": user,
            "status": "active",
            "paused_until": None,
            "reason": None,
            "last_pass_at": None,
            "last_success_at": None,
            "last_error": None,
            "consecutive_failures": 0,
        }
    return {
        "user": user,
        "status": row.status,
        "paused_until": _iso(row.paused_until),
        "reason": row.reason,
        "last_pass_at": _iso(row.last_pass_at),
        "last_success_at": _iso(row.last_success_at),
        "last_error": row.last_error,
        "consecutive_failures": row.consecutive_failures,
    }


def _lease(connection: Connection, user: str) -> dict[str, Any] | None:
    """Which replica holds the user's lease and until when (PostgreSQL)."""
    row = connection.execute(
        select(LEASES.c.owner, LEASES.c.expires_at).where(LEASES.c.user == user)
    ).first()
    if row is None or row.owner is None:
        return None
    return {"owner": row.owner, "expires_at": _iso(row.expires_at)}


def _state_counts(
    connection: Connection, users: Sequence[str]
) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {
        user: dict.fromkeys((s.value for s in State), 0) for user in users
    }
    rows = connection.execute(
        select(EVENTS.c.user, EVENTS.c.state, func.count())
        .where(EVENTS.c.user.in_(users))
        .group_by(EVENTS.c.user, EVENTS.c.state)
    )
    for user, state, count in rows:
        counts[user][state] = int(count)
    return counts


def _skip_reasons(
    connection: Connection, users: Sequence[str]
) -> dict[str, dict[str, int]]:
    reasons: dict[str, dict[str, int]] = defaultdict(dict)
    rows = connection.execute(
        select(EVENTS.c.user, EVENTS.c.reason, func.count())
        .where(EVENTS.c.user.in_(users), EVENTS.c.state == State.SKIPPED)
        .group_by(EVENTS.c.user, EVENTS.c.reason)
    )
    for user, reason, count in rows:
        reasons[user][reason or "unspecified"] = int(count)
    return reasons


def _recent_failures(connection: Connection, user: str) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(
            EVENTS.c.event_id, EVENTS.c.state, EVENTS.c.last_error, EVENTS.c.updated_at
        )
        .where(EVENTS.c.user == user, EVENTS.c.state.in_(FAILURES))
        .order_by(EVENTS.c.updated_at.desc(), EVENTS.c.event_id)
        .limit(RECENT_FAILURES)
    )
    return [
        {
            "event_id": event_id,
            "state": state,
            "last_error": error,
            "updated_at": _iso(updated_at),
        }
        for event_id, state, error, updated_at in rows
    ]


def _recent_failed_passes(connection: Connection, user: str) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(PASSES.c.at, PASSES.c.error)
        .where(PASSES.c.user == user, PASSES.c.ok.is_(False))
        .order_by(PASSES.c.id.desc())
        .limit(RECENT_PASSES)
    )
    return [{"at": _iso(at), "error": error} for at, error in rows]
