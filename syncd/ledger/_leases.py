"""Per-user leases on PostgreSQL: row leases with expiry and a fencing counter.

A lease is free when it has no owner or its ``expires_at`` has passed.
Taking a free lease bumps ``fence``; every fenced write checks it (see
``_sql.check_fence``), so a process whose lease was taken over cannot write.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, or_, select, update

from syncd.ledger._schema import LEASES, OWNERS
from syncd.ledger._sql import upsert


def ensure_rows(connection: Connection, users: Sequence[str]) -> None:
    """Create missing lease rows, in a stable order to avoid deadlocks."""
    existing = set(
        connection.execute(
            select(LEASES.c.user).where(LEASES.c.user.in_(users))
        ).scalars()
    )
    missing = sorted(set(users) - existing)
    if not missing:
        return
    rows = [{"user": u, "owner": None, "expires_at": None, "fence": 0} for u in missing]
    connection.execute(upsert(connection, LEASES).on_conflict_do_nothing(), rows)


def keep_held(
    connection: Connection,
    owner: str,
    users: Sequence[str],
    *,
    now: datetime,
    ttl: timedelta,
    limit: int | None,
    busy: Collection[str] = (),
) -> dict[str, int]:
    """Renew this owner's live leases, shedding any beyond ``limit``.

    Users in ``busy`` (a pass is running for them) are shed last.
    """
    rows = connection.execute(
        select(LEASES.c.user, LEASES.c.fence)
        .where(LEASES.c.owner == owner, LEASES.c.user.in_(users))
        .where(LEASES.c.expires_at > now)
        .order_by(LEASES.c.user)
        .with_for_update()
    ).all()
    held = sorted(rows, key=lambda row: row.user not in busy)
    keep = held if limit is None else held[:limit]
    shed = [row.user for row in held[len(keep) :]]
    if shed:
        release(connection, owner, shed)
    if keep:
        connection.execute(
            update(LEASES)
            .where(LEASES.c.user.in_([row.user for row in keep]))
            .values(expires_at=now + ttl)
        )
    return {row.user: row.fence for row in keep}


def grab_free(
    connection: Connection,
    owner: str,
    users: Sequence[str],
    *,
    now: datetime,
    ttl: timedelta,
    limit: int | None,
) -> dict[str, int]:
    """Take up to ``limit`` free or expired leases other owners are not taking."""
    if limit is not None and limit <= 0:
        return {}

    free = (
        select(LEASES.c.user)
        .where(LEASES.c.user.in_(users))
        .where(
            or_(
                LEASES.c.owner.is_(None),
                LEASES.c.expires_at.is_(None),
                LEASES.c.expires_at <= now,
            )
        )
        .order_by(LEASES.c.user)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    chosen = list(connection.execute(free).scalars())
    if not chosen:
        return {}

    taken = connection.execute(
        update(LEASES)
        .where(LEASES.c.user.in_(chosen))
        .values(owner=owner, expires_at=now + ttl, fence=LEASES.c.fence + 1)
        .returning(LEASES.c.user, LEASES.c.fence)
    ).all()
    return {row.user: row.fence for row in taken}


def renew(
    connection: Connection,
    owner: str,
    user: str,
    fence: int,
    *,
    now: datetime,
    ttl: timedelta,
) -> bool:
    result = connection.execute(
        update(LEASES)
        .where(LEASES.c.user == user, LEASES.c.owner == owner)
        .where(LEASES.c.fence == fence, LEASES.c.expires_at > now)
        .values(expires_at=now + ttl)
    )
    return result.rowcount == 1


def release(
    connection: Connection, owner: str, users: Sequence[str] | None = None
) -> None:
    statement = update(LEASES).where(LEASES.c.owner == owner)
    if users is not None:
        statement = statement.where(LEASES.c.user.in_(users))
    connection.execute(statement.values(owner=None, expires_at=None))


def heartbeat(connection: Connection, owner: str, now: datetime) -> None:
    statement = upsert(connection, OWNERS).values(owner=owner, heartbeat_at=now)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=[OWNERS.c.owner], set_={"heartbeat_at": now}
        )
    )


def forget_owner(connection: Connection, owner: str) -> None:
    connection.execute(delete(OWNERS).where(OWNERS.c.owner == owner))


def live_owners(connection: Connection, since: datetime) -> int:
    count = connection.execute(
        select(func.count()).select_from(OWNERS).where(OWNERS.c.heartbeat_at > since)
    ).scalar_one()
    return int(count)
