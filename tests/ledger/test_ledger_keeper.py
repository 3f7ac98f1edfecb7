"""The lease keeper: fair shares among live replicas, shedding, lost leases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from syncd.ledger import LeaseKeeper, Ledger
from tests.ledger.helpers import FakeClock

pytestmark = pytest.mark.postgres

USERS = [f"user{n}@contoso.example" for n in range(4)]
TTL = timedelta(seconds=30)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def replicas(
    pg_url: str, clock: FakeClock, ticks: Ticks
) -> Iterator[Callable[[str], LeaseKeeper]]:
    """Keepers named by owner, each on its own connection to the ledger."""
    ledgers: list[Ledger] = []

    def keeper(owner: str) -> LeaseKeeper:
        ledgers.append(Ledger.open(pg_url, clock=clock))
        return LeaseKeeper(
            ledgers[-1],
            owner,
            USERS,
            ttl=TTL,
            renew_every=timedelta(seconds=10),
            request_deadline=timedelta(seconds=5),
            clock=ticks,
        )

    yield keeper
    for ledger in ledgers:
        ledger.close()


def test_a_second_replica_gets_its_fair_share(
    replicas: Callable[[str], LeaseKeeper], ticks: Ticks
) -> None:
    """Alone, a replica serves all four; with a second, each ends with two."""
    a, b = replicas("a"), replicas("b")

    async def scenario() -> tuple[set[str], set[str], set[str]]:
        alone = {u for u in USERS if a.take(u) is not None}
        refused = {u for u in USERS if b.take(u) is not None}
        ticks.now += 10  # a counts the owners again
        a.renew()
        taken = {u for u in USERS if b.take(u) is not None}
        await a.aclose()
        await b.aclose()
        return alone, refused, taken

    alone, refused, taken = asyncio.run(scenario())

    assert alone == set(USERS)
    assert refused == set()
    assert len(taken) == 2


def test_a_busy_user_is_shed_last_and_a_lost_lease_stops_its_pass(
    replicas: Callable[[str], LeaseKeeper], clock: FakeClock, ticks: Ticks
) -> None:
    """Shedding spares the running pass; a taken-over lease cancels it."""
    a, b = replicas("a"), replicas("b")

    async def scenario() -> tuple[bool, bool, bool]:
        for user in USERS:
            a.take(user)
        pass_task = asyncio.ensure_future(asyncio.sleep(60))
        with a.serving(USERS[3], pass_task):
            b.take(USERS[0])
            ticks.now += 10
            a.renew()
            kept_busy = USERS[3] in a.held
            clock.advance(seconds=31)
            ticks.now += 10
            stolen = b.take(USERS[3]) is not None
            a.renew()
            await asyncio.sleep(0)
        await a.aclose()
        await b.aclose()
        return kept_busy, stolen, pass_task.cancelled() and a.stopped(USERS[3])

    kept_busy, stolen, stopped = asyncio.run(scenario())

    assert kept_busy and stolen and stopped
