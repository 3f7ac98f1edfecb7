"""A full pass in-process: Runner and Ledger (SQLite) against the simulator."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from syncd.config import load_config
from syncd.ledger import Ledger
from syncd.sim import Simulator
from tests.e2e.support import SimConfig, run_passes
from tests.integration.default_scenario import (
    BOB,
    BOOKED_COUNT,
    USERS,
    expected_entries,
    expected_skip_reasons,
)


def entry_keys(sim: Simulator, mailbox: str) -> Counter[tuple[str, str, str, int]]:
    """The user's InLoox entries as a multiset of (name, project, start, minutes)."""
    return Counter(
        (e["DisplayName"], e["ProjectId"], e["StartDateTime"], e["DurationMinutes"])
        for e in sim.inloox_entries(mailbox)
    )


def anchor_of(sim: Simulator) -> date:
    return sim.scenario.anchor_date(sim.clock().date())


@pytest.fixture
def config(sim_config: SimConfig) -> Any:
    return load_config(sim_config.path)


@pytest.fixture
def ledger(sim_config: SimConfig) -> Iterator[Ledger]:
    opened = Ledger.open(sim_config.ledger_url)
    yield opened
    opened.close()


def test_first_pass_books_every_bookable_event_once_on_its_project(
        sim: Simulator, config: Any, ledger: Ledger) -> None:
    """A first pass books each bookable scenario meeting once, on its project."""
    results = run_passes(config, ledger)

    assert {u: (r.ok, r.booked, r.failed) for u, r in results.items()} == {
        u: (True, BOOKED_COUNT[u], 0) for u in USERS}
    for user in USERS:
        assert entry_keys(sim, user) == expected_entries(user, anchor_of(sim))
    assert sim.stats.inloox_creates == 35


def test_ledger_records_each_booking_with_its_entry(
        sim: Simulator, config: Any, ledger: Ledger) -> None:
    """Every booked ledger record names its own InLoox entry and project."""
    run_passes(config, ledger)

    for user in USERS:
        booked = [r for r in ledger.records(user).values() if r.state == "booked"]
        entries = {e["TimeEntryId"]: e for e in sim.inloox_entries(user)}
        assert len(booked) == BOOKED_COUNT[user]
        assert sorted(str(r.entry_id) for r in booked) == sorted(entries)
        assert all(r.project_id == entries[str(r.entry_id)]["ProjectId"]
                   for r in booked)


def test_skips_are_recorded_with_their_reasons(
        sim: Simulator, config: Any, ledger: Ledger) -> None:
    """Events that are not work are recorded as skipped, each with its reason."""
    now = datetime.now(UTC)
    results = run_passes(config, ledger)

    for user in USERS:
        expected = expected_skip_reasons(user, anchor_of(sim), now)
        skipped = [r for r in ledger.records(user).values() if r.state == "skipped"]
        assert Counter(r.reason for r in skipped) == expected, user
        assert Counter(results[user].skipped) == expected, user


def test_second_pass_makes_no_inloox_write(
        sim: Simulator, config: Any, ledger: Ledger) -> None:
    """A second pass over an unchanged calendar books, changes and deletes nothing."""
    run_passes(config, ledger)
    writes = sim.stats.inloox_writes

    results = run_passes(config, ledger)

    assert sim.stats.inloox_writes == writes == 35
    assert all(r.ok for r in results.values())
    assert [(r.booked, r.updated, r.retracted, r.failed) for r in results.values()] \
        == [(0, 0, 0, 0)] * 3
    for user in USERS:
        assert entry_keys(sim, user) == expected_entries(user, anchor_of(sim))


def test_create_committed_but_unanswered_is_booked_once(
        sim: Simulator, config: Any, ledger: Ledger) -> None:
    """InLoox commits a create and drops the connection: two passes leave one entry."""
    sim.faults.drop_after_commit(1)

    first = run_passes(config, ledger, [BOB])[BOB]
    in_doubt = [r for r in ledger.records(BOB).values() if r.state == "in_doubt"]
    second = run_passes(config, ledger, [BOB])[BOB]

    assert (first.booked, first.failed) == (4, 1)
    assert len(in_doubt) == 1
    record = ledger.get(BOB, in_doubt[0].event_id)
    assert record is not None and record.state == "booked"
    same_start = [e for e in sim.inloox_entries(BOB)
                  if e["StartDateTime"] == f"{record.start:%Y-%m-%dT%H:%M:%SZ}"]
    assert [e["TimeEntryId"] for e in same_start] == [record.entry_id]
    assert second.ok and second.booked == 1
    assert entry_keys(sim, BOB) == expected_entries(BOB, anchor_of(sim))
    assert sim.stats.inloox_creates == 5
