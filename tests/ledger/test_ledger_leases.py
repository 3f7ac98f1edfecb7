"""Per-user leases with fencing: scale-out on PostgreSQL, trivial on SQLite."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from syncd.errors import LeaseLost
from syncd.ledger import Ledger, State
from tests.ledger.helpers import FakeClock

TTL = timedelta(seconds=30)
USERS = [f"user{n:02d}@contoso.example" for n in range(30)]
ALICE = USERS[0]

Replica = Callable[[], Ledger]


@pytest.fixture
def replica(pg_url: str, clock: FakeClock) -> Iterator[Replica]:
    """Open another 'process' on the shared PostgreSQL ledger."""
    opened: list[Ledger] = []

    def open_one() -> Ledger:
        opened.append(Ledger.open(pg_url, clock=clock))
        return opened[-1]

    yield open_one
    for ledger in opened:
        ledger.close()


def claim(ledger: Ledger, fence: int | None, event_id: str = "ev-1") -> object:
    return ledger.claim(
        ALICE,
        event_id,
        project_id="p",
        task_id=None,
        start=None,
        end=None,
        all_day=False,
        series_master_id=None,
        fence=fence,
    )


def test_sqlite_grants_every_lease(tmp_path: Path) -> None:
    """On SQLite one process serves everyone: every user, fence 0, no checks."""
    ledger = Ledger.open(f"sqlite:///{tmp_path}/ledger.db")

    leases = ledger.acquire_leases("a", USERS[:3], TTL, limit=1)

    assert leases == dict.fromkeys(USERS[:3], 0)
    assert ledger.renew_lease("a", ALICE, 0, TTL) is True
    assert claim(ledger, fence=0) is not None
    ledger.close()


@pytest.mark.postgres
def test_a_lone_owner_gets_every_lease_and_keeps_its_fences(
    replica: Replica, clock: FakeClock
) -> None:
    """The first owner gets all users (fence 1); renewing keeps the fences."""
    a = replica()

    first = a.acquire_leases("a", USERS, TTL)
    clock.advance(seconds=20)
    renewed = a.acquire_leases("a", USERS, TTL)

    assert first == dict.fromkeys(USERS, 1)
    assert renewed == first


@pytest.mark.postgres
def test_a_live_lease_is_not_taken(replica: Replica, clock: FakeClock) -> None:
    """Another owner gets nothing while the lease is live."""
    a, b = replica(), replica()
    a.acquire_leases("a", [ALICE], TTL)
    clock.advance(seconds=29)

    assert b.acquire_leases("b", [ALICE], TTL) == {}


@pytest.mark.postgres
def test_expired_lease_is_taken_over_and_the_old_owner_fenced(
    replica: Replica, clock: FakeClock
) -> None:
    """After expiry B takes the user; A's writes raise LeaseLost, B's succeed."""
    a, b = replica(), replica()
    fence_a = a.acquire_leases("a", [ALICE], TTL)[ALICE]
    claim(a, fence_a, "before")
    clock.advance(seconds=31)

    fence_b = b.acquire_leases("b", [ALICE], TTL)[ALICE]

    assert (fence_a, fence_b) == (1, 2)
    with pytest.raises(LeaseLost):
        claim(a, fence_a)
    with pytest.raises(LeaseLost):
        a.transition(ALICE, "before", State.BOOKED, fence=fence_a)
    with pytest.raises(LeaseLost):
        a.save_cursor(ALICE, "https://graph/delta?x", None, None, fence=fence_a)
    with pytest.raises(LeaseLost):
        a.record_pass(ALICE, ok=True, summary={}, error=None, fence=fence_a)
    assert a.renew_lease("a", ALICE, fence_a, TTL) is False
    assert a.acquire_leases("a", [ALICE], TTL) == {}
    assert claim(b, fence_b) is not None
    assert a.get(ALICE, "before").state is State.PENDING  # type: ignore[union-attr]


@pytest.mark.postgres
def test_an_expired_lease_cannot_write_even_if_nobody_took_it(
    replica: Replica, clock: FakeClock
) -> None:
    """A fence whose lease has run out is refused: the owner must re-acquire."""
    a = replica()
    fence = a.acquire_leases("a", [ALICE], TTL)[ALICE]
    clock.advance(seconds=31)

    with pytest.raises(LeaseLost):
        claim(a, fence)
    assert a.acquire_leases("a", [ALICE], TTL) == {ALICE: 2}


@pytest.mark.postgres
def test_renewing_keeps_others_out(replica: Replica, clock: FakeClock) -> None:
    """A lease renewed before expiry stays with its owner."""
    a, b = replica(), replica()
    fence = a.acquire_leases("a", [ALICE], TTL)[ALICE]
    clock.advance(seconds=20)

    renewed = a.renew_lease("a", ALICE, fence, TTL)
    clock.advance(seconds=20)

    assert renewed is True
    assert b.acquire_leases("b", [ALICE], TTL) == {}
    assert claim(a, fence) is not None


@pytest.mark.postgres
def test_released_leases_are_free_at_once(replica: Replica) -> None:
    """A clean stop gives the users back without waiting for expiry."""
    a, b = replica(), replica()
    a.acquire_leases("a", USERS[:2], TTL)

    a.release_leases("a")

    assert b.acquire_leases("b", USERS[:2], TTL) == dict.fromkeys(USERS[:2], 2)


@pytest.mark.postgres
def test_acquire_skips_leases_locked_by_another_owner(
    replica: Replica, pg_url: str
) -> None:
    """Rows another acquirer has locked are skipped, not waited for."""
    b = replica()
    b.acquire_leases("seed", USERS[:10], TTL)
    b.release_leases("seed")
    dsn = make_url(pg_url).set(drivername="postgresql")
    with psycopg.connect(dsn.render_as_string(hide_password=False)) as locker:
        locker.execute(
            'SELECT 1 FROM leases WHERE "user" = ANY(%s) FOR UPDATE', [USERS[:5]]
        )

        taken = b.acquire_leases("b", USERS[:10], TTL)

        locker.rollback()
    assert sorted(taken) == USERS[5:10]


@pytest.mark.postgres
def test_three_owners_spread_the_users(replica: Replica) -> None:
    """Three owners racing with a fair limit split 30 users without overlap."""
    owners = {name: replica() for name in ("a", "b", "c")}
    for name, ledger in owners.items():
        ledger.heartbeat(name)
    limit = -(-len(USERS) // owners["a"].live_owners(TTL))
    barrier = threading.Barrier(3)
    raced: dict[str, dict[str, int]] = {}

    def acquire(name: str) -> None:
        barrier.wait()
        raced[name] = owners[name].acquire_leases(name, USERS, TTL, limit=limit)

    threads = [threading.Thread(target=acquire, args=(n,)) for n in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    settled = {
        n: ledger.acquire_leases(n, USERS, TTL, limit=limit)
        for n, ledger in owners.items()
    }

    assert limit == 10
    a_raced, b_raced, c_raced = (set(leases) for leases in raced.values())
    assert a_raced.isdisjoint(b_raced) and c_raced.isdisjoint(a_raced | b_raced)
    assert [len(leases) for leases in settled.values()] == [10, 10, 10]
    assert set().union(*settled.values()) == set(USERS)


@pytest.mark.postgres
def test_an_owner_above_its_share_gives_leases_back(replica: Replica) -> None:
    """With a lower limit an owner keeps only its share; the rest is free."""
    a, b = replica(), replica()
    a.acquire_leases("a", USERS, TTL)

    kept = a.acquire_leases("a", USERS, TTL, limit=15)
    taken = b.acquire_leases("b", USERS, TTL, limit=15)

    assert len(kept) == len(taken) == 15
    assert set(kept).isdisjoint(taken)


def test_live_owners_counts_recent_heartbeats(ledger: Ledger, clock: FakeClock) -> None:
    """Owners whose heartbeat is older than the ttl are not counted."""
    ledger.heartbeat("old")
    clock.advance(seconds=40)
    ledger.heartbeat("a")
    ledger.heartbeat("b")

    assert ledger.live_owners(TTL) == 2
