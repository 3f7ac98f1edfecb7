"""Scale-out: three ``syncd run`` processes share 60 users on one PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.ledger import Ledger
from syncd.sim import Simulator
from tests.crash.support import (
    bookable_starts,
    entry_starts,
    ledger_rows,
    scenario,
    start,
    states,
    wait_for,
    write_config,
)
from tests.pg import drop_database, fresh_database, postgres_server  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

USERS, BOOKABLE = 60, 50
TOTAL = USERS * BOOKABLE


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """60 users with 50 Apollo meetings each."""
    simulator = Simulator(scenario(USERS, BOOKABLE)).start()
    yield simulator
    simulator.close()


@pytest.fixture
def pg_ledger(postgres_server: str) -> Iterator[str]:  # noqa: F811
    url = fresh_database("scale_out")
    Ledger.open(url).close()
    yield url
    drop_database(url)


def lease_owners(url: str) -> dict[str, str]:
    """User -> owner of its live lease."""
    rows = ledger_rows(url, 'SELECT "user", owner FROM leases WHERE expires_at > now()')
    return {user: owner for user, owner in rows if owner}


def booked_per_user(url: str) -> Counter[str]:
    rows = ledger_rows(
        url, "SELECT \"user\", count(*) FROM events WHERE state = 'booked' GROUP BY 1"
    )
    return Counter(dict(rows))


def pid_of(owner: str) -> int:
    return int(owner.split(":")[1])


def test_three_replicas_book_everything_once_and_take_over_a_killed_one(
    sim: Simulator, tmp_path: Path, pg_ledger: str
) -> None:
    """Every event once, every replica booked some, a killed one's users finished."""
    config = write_config(
        sim, tmp_path, pg_ledger, **{"graph.page_size": 50, "http.timeout": "2s"}
    )
    replicas = [start(sim, config, "run", f"replica{i}") for i in range(3)]
    try:
        wait_for(
            lambda: states(pg_ledger)["booked"] >= TOTAL / 3,
            60,
            "a third of the bookings",
            every=0.5,
        )
        owners = lease_owners(pg_ledger)
        by_pid = Counter(pid_of(o) for o in owners.values())
        victim = next(r for r in replicas if by_pid[r.process.pid])
        booked = booked_per_user(pg_ledger)
        orphans = {
            u
            for u, o in owners.items()
            if pid_of(o) == victim.process.pid and booked[u] < BOOKABLE
        }
        victim.kill()

        wait_for(
            lambda: states(pg_ledger)["booked"] == TOTAL, 80, "every booking", every=0.5
        )
        survivors = [r for r in replicas if r is not victim]
        taken_over = lease_owners(pg_ledger)
    finally:
        codes = [r.stop() for r in replicas if r.process.poll() is None]

    assert all(entry_starts(sim, m) == bookable_starts(sim, m) for m in sim.users)
    assert sum(len(sim.inloox_entries(m)) for m in sim.users) == TOTAL
    assert all(r.events("event_booked") for r in replicas)
    assert orphans
    assert orphans <= set(taken_over)
    assert {pid_of(taken_over[u]) for u in orphans} <= {
        r.process.pid for r in survivors
    }
    assert codes == [0, 0]
