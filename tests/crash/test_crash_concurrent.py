"""SIGKILL ``syncd once`` while several creates of one pass are in flight.

Three of six creates are held in the simulator -- before InLoox acts, or
after it committed -- while the other three are answered; the process is
killed then.  After the restart InLoox holds exactly one entry per bookable
event, and a further pass books nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.sim import Simulator
from tests.crash.support import (
    bookable_starts,
    entry_starts,
    once,
    scenario,
    start,
    states,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

MAILBOX = "u000@contoso.example"
BOOKABLE, HELD = 6, 3


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """One user with six Apollo meetings."""
    simulator = Simulator(scenario(1, BOOKABLE)).start()
    yield simulator
    simulator.close()


@pytest.mark.parametrize(
    ("point", "committed"), [("inloox_create", 0), ("inloox_created", HELD)]
)
def test_killed_with_creates_in_flight_together(
    sim: Simulator, tmp_path: Path, point: str, committed: int
) -> None:
    """Three creates in flight at the kill: the restart books each event once."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    config = write_config(sim, tmp_path, url, **{"http.inloox_concurrency": 6})
    sim.faults.hold(point, HELD)
    process = start(sim, config, "once", "first")
    wait_for(lambda: sim.faults.held(point) == HELD, 60, "three creates held")
    wait_for(
        lambda: states(url)["booked"] == BOOKABLE - HELD, 30, "the others answered"
    )
    process.kill()
    sim.faults.release(point, answer=False)

    assert states(url) == {"booked": BOOKABLE - HELD, "pending": HELD}
    assert sum(entry_starts(sim, MAILBOX).values()) == BOOKABLE - HELD + committed

    assert once(sim, config, "restart") == 0
    creates = sim.stats.inloox_creates
    assert once(sim, config, "again") == 0

    assert entry_starts(sim, MAILBOX) == bookable_starts(sim, MAILBOX)
    assert states(url) == {"booked": BOOKABLE}
    assert sim.stats.inloox_creates == creates == BOOKABLE
