"""SIGKILL a real ``syncd once`` at each step of a pass; the restart books the rest.

The process is stopped at a precise step without any hook in the product:
the simulator holds a request at a hold point until the test has killed the
client, and on PostgreSQL the test holds a row or table lock so the client
blocks on exactly the write it must not finish.  After the restart InLoox
holds exactly one entry per bookable event, and a further pass books nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.ledger import Ledger
from syncd.sim import Simulator
from tests.crash.support import (
    Syncd,
    bookable_starts,
    entry_starts,
    held_lock,
    once,
    scenario,
    start,
    states,
    wait_for,
    wait_leases_free,
    waiting_on_lock,
    write_config,
)
from tests.pg import drop_database, fresh_database, postgres_server  # noqa: F401

pytestmark = pytest.mark.slow

MAILBOX = "u000@contoso.example"
BOOKABLE, UNBOOKED = 6, 1


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """One user with six Apollo meetings and one meeting nobody books."""
    simulator = Simulator(scenario(1, BOOKABLE, unbooked=UNBOOKED)).start()
    yield simulator
    simulator.close()


@pytest.fixture
def pg_ledger(request: pytest.FixtureRequest, postgres_server: str) -> Iterator[str]:  # noqa: F811
    """A fresh, migrated PostgreSQL ledger for this test."""
    url = fresh_database(request.node.name)
    Ledger.open(url).close()
    yield url
    drop_database(url)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ledger on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return str(request.getfixturevalue("pg_ledger"))


def kill_at_hold(sim: Simulator, config: Path, point: str) -> Syncd:
    """Start ``syncd once``, SIGKILL it while a request waits at ``point``."""
    sim.faults.hold(point)
    process = start(sim, config, "once", "first")
    wait_for(
        lambda: sim.faults.held(point) or process.process.poll() is not None,
        timeout=60,
        what=f"a request held at {point}",
    )
    assert process.process.poll() is None, process.log_path.read_text()
    process.kill()
    return process


def assert_recovers(sim: Simulator, config: Path, url: str) -> None:
    """Restart: one entry per bookable event; one more pass creates nothing."""
    if url.startswith("postgresql"):
        wait_leases_free(url)

    assert once(sim, config, "restart") == 0
    creates = sim.stats.inloox_creates
    assert once(sim, config, "again") == 0

    assert entry_starts(sim, MAILBOX) == bookable_starts(sim, MAILBOX)
    assert sum(entry_starts(sim, MAILBOX).values()) == BOOKABLE
    assert states(url) == {"booked": BOOKABLE, "skipped": UNBOOKED}
    assert sim.stats.inloox_creates == creates


def test_killed_after_the_claim(
    sim: Simulator, tmp_path: Path, ledger_url: str
) -> None:
    """Killed after the claim, before InLoox acted: the restart books it once."""
    config = write_config(sim, tmp_path, ledger_url)

    kill_at_hold(sim, config, "inloox_create")
    sim.faults.release("inloox_create", answer=False)

    assert states(ledger_url)["pending"] == 1
    assert entry_starts(sim, MAILBOX) == {}
    assert_recovers(sim, config, ledger_url)


def test_killed_after_inloox_committed(
    sim: Simulator, tmp_path: Path, ledger_url: str
) -> None:
    """Killed after the request was sent and committed, before the answer."""
    config = write_config(sim, tmp_path, ledger_url)

    kill_at_hold(sim, config, "inloox_created")
    sim.faults.release("inloox_created")

    assert states(ledger_url)["pending"] == 1
    assert sum(entry_starts(sim, MAILBOX).values()) == 1
    assert_recovers(sim, config, ledger_url)


def test_killed_between_pages_of_a_round(
    sim: Simulator, tmp_path: Path, ledger_url: str
) -> None:
    """Killed while the second page of the round is on its way."""
    config = write_config(sim, tmp_path, ledger_url)

    kill_at_hold(sim, config, "graph_page")
    sim.faults.release("graph_page", answer=False)

    assert_recovers(sim, config, ledger_url)


@pytest.mark.postgres
def test_killed_before_the_outcome_is_recorded(
    sim: Simulator, tmp_path: Path, pg_ledger: str
) -> None:
    """InLoox answered, the process dies on the write that records the outcome."""
    config = write_config(sim, tmp_path, pg_ledger)
    sim.faults.hold("inloox_create")
    process = start(sim, config, "once", "first")
    wait_for(lambda: sim.faults.held("inloox_create"), 60, "the first create")

    lock = held_lock(
        pg_ledger, "SELECT 1 FROM events WHERE state = 'pending' FOR UPDATE"
    )
    sim.faults.release("inloox_create")
    wait_for(lambda: waiting_on_lock(pg_ledger, "UPDATE events"), 30, "the outcome")
    process.kill()
    lock.rollback()
    lock.close()

    assert sum(entry_starts(sim, MAILBOX).values()) == 1
    assert states(pg_ledger)["pending"] == 1
    assert_recovers(sim, config, pg_ledger)


@pytest.mark.postgres
def test_killed_before_the_delta_link_is_saved(
    sim: Simulator, tmp_path: Path, pg_ledger: str
) -> None:
    """Every outcome is recorded, the process dies saving the delta link."""
    config = write_config(sim, tmp_path, pg_ledger)
    lock = held_lock(pg_ledger, "LOCK TABLE cursors IN EXCLUSIVE MODE")

    process = start(sim, config, "once", "first")
    wait_for(lambda: waiting_on_lock(pg_ledger, "INSERT INTO cursors"), 60, "save")
    process.kill()
    lock.rollback()
    lock.close()

    assert states(pg_ledger) == {"booked": BOOKABLE, "skipped": UNBOOKED}
    assert_recovers(sim, config, pg_ledger)
