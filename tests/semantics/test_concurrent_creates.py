"""The creates of one pass run side by side; an interrupted pass books once later."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from syncd.runner import Runner

from .world import ALICE, APOLLO, World, at

MEETINGS = 6


def _meetings(w: World, count: int = MEETINGS) -> list[str]:
    """``count`` ended Apollo meetings on Thursday, one an hour from 08:00."""
    return [w.add(f"Apollo {n}", at(19, 8 + n)) for n in range(count)]


def _states(w: World, ids: list[str]) -> Counter[str]:
    """How many of these events stand in each ledger state ("none": no record)."""
    records = [w.record(i) for i in ids]
    return Counter(str(r.state) if r else "none" for r in records)


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_creates_of_one_pass_are_in_flight_together(w: World) -> None:
    """Six creates with 50 ms of InLoox latency overlap; each is booked once."""
    ids = _meetings(w)
    w.sim.faults.latency["inloox"] = 0.05

    result = w.run_pass()

    assert (result.ok, result.booked) == (True, MEETINGS)
    assert w.sim.stats.inloox_creates == MEETINGS
    assert w.sim.stats.inloox_max_concurrent == MEETINGS
    assert _states(w, ids) == {"booked": MEETINGS}


def test_empty_answers_are_looked_up_each_to_its_own_entry(w: World) -> None:
    """Two meetings at the same time, InLoox answers 204: one entry each."""
    twins = [w.add("Apollo twin", at(19, 9)), w.add("Apollo twin", at(19, 9))]
    others = _meetings(w, 3)
    w.sim.faults.create_response = "empty204"

    result = w.run_pass()

    entries = {str(w.record(i).entry_id) for i in twins}  # type: ignore[union-attr]
    assert (result.ok, result.booked) == (True, 5)
    assert len(entries) == 2 and "None" not in entries
    assert _states(w, twins + others) == {"booked": 5}
    assert len(w.entries()) == 5


def test_a_pass_cut_during_creates_is_looked_up_by_the_next(w: World) -> None:
    """Cut while one create waits in InLoox: the same runner's next pass marks
    the claim in doubt, finds the entry InLoox made and creates nothing twice."""
    ids = _meetings(w)
    w.sim.faults.hold("inloox_create")

    async def cut() -> None:
        task = asyncio.ensure_future(w.runner.run_pass(ALICE))
        deadline = time.monotonic() + 10
        while _states(w, ids)["booked"] < MEETINGS - 1:  # the others are answered
            assert time.monotonic() < deadline, "the other creates never ended"
            await asyncio.sleep(0.01)
        assert w.sim.faults.held("inloox_create") == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    w.loop.run_until_complete(cut())
    assert _states(w, ids) == {"booked": MEETINGS - 1, "pending": 1}
    w.sim.faults.release("inloox_create")
    _wait_for(lambda: w.sim.stats.inloox_creates == MEETINGS)

    with capture_logs() as logs:
        result = w.run_pass()

    assert result.ok and result.booked == 1
    assert [e["count"] for e in logs if e["event"] == "claims_in_doubt"] == [1]
    assert _states(w, ids) == {"booked": MEETINGS}
    assert w.sim.stats.inloox_creates == MEETINGS
    assert len(w.entries()) == MEETINGS


def test_a_quiet_pass_does_not_look_for_interrupted_claims_again(w: World) -> None:
    """After a clean pass, the next passes of the runner skip the in-doubt check."""
    _meetings(w, 2)
    w.run_pass()

    with capture_logs() as logs:
        w.run_pass()
        w.run_pass()

    assert not [e for e in logs if e["event"] == "claims_in_doubt"]


def _runner_with_key(w: World, api_key: str | None) -> Runner:
    """A runner for Alice with another InLoox key (None: the right one)."""
    config = w.config
    if api_key is not None:
        user = config.users[0]
        wrong = user.inloox.model_copy(update={"api_key": SecretStr(api_key)})  # type: ignore[union-attr]
        config = config.model_copy(
            update={"users": (user.model_copy(update={"inloox": wrong}),)})
    w.loop.run_until_complete(w.runner.aclose())
    return Runner(config, w.ledger, clock=w.clock)


def test_an_auth_error_stops_the_creates_and_a_fixed_key_books_once(
    w: World,
) -> None:
    """InLoox refuses the key: the pass stops, the user waits for new
    credentials, nothing is booked; with the right key the claims cut in
    flight are looked up and booked, the refused ones once their retry is due,
    every meeting exactly once."""
    ids = _meetings(w)
    w.sim.faults.latency["inloox"] = 0.05
    w.runner = _runner_with_key(w, "ilx_pat_wrong_key_000000000000")

    failed = w.run_pass()

    states = _states(w, ids)
    assert (failed.ok, failed.error_kind) == (False, "auth")
    assert w.ledger.user_state(ALICE).status == "auth_required"  # type: ignore[union-attr]
    assert set(states) <= {"pending", "failed_transient"}
    assert states["failed_transient"] >= 1
    assert w.sim.stats.inloox_creates == 0

    w.runner = _runner_with_key(w, None)
    resumed = w.run_pass()
    w.clock.advance(timedelta(minutes=2))
    retried = w.run_pass()

    assert (resumed.ok, resumed.booked) == (True, states["pending"])
    assert (retried.ok, retried.booked) == (True, states["failed_transient"])
    assert w.ledger.user_state(ALICE).status == "active"  # type: ignore[union-attr]
    assert _states(w, ids) == {"booked": MEETINGS}
    assert w.sim.stats.inloox_creates == MEETINGS
    assert {e["ProjectId"] for e in w.entries()} == {APOLLO}
