"""Meetings that change while their booking is in doubt, and moves too far back."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx

from syncd.ledger import State
from syncd.runner import Runner
from syncd.sim.scenario import parse_scenario

from .world import ALICE, APOLLO, SCENARIO, ZEPHYR, World, at

BOB = "bob@contoso.example"
BOB_KEY = "ilx_pat_bob_semantics_00000000000000"


def _in_doubt(w: World, *subjects: str) -> list[str]:
    """Add events and leave their creates in doubt (committed, answer dropped)."""
    ids = [w.add(subject, at(19, 9 + i)) for i, subject in enumerate(subjects)]
    w.sim.faults.drop_after_commit(len(ids))
    w.run_pass()
    return ids


def test_move_while_in_doubt_updates_the_found_entry(w: World) -> None:
    """A meeting moved while its booking was in doubt: the found entry follows it."""
    (event_id,) = _in_doubt(w, "Apollo review")
    w.calendar.update_event(event_id, start=at(18, 14), end=at(18, 15))

    w.run_pass()

    assert w.booked() == [(APOLLO, "2026-03-18T14:00", "2026-03-18T15:00")]
    assert w.record(event_id).state == "booked"


def test_recategorised_while_in_doubt_moves_project(w: World) -> None:
    """A meeting recategorised while in doubt: the found entry changes project."""
    (event_id,) = _in_doubt(w, "Apollo review")
    w.calendar.update_event(event_id, categories=["Zephyr"])

    w.run_pass()

    assert w.booked() == [(ZEPHYR, "2026-03-19T09:00", "2026-03-19T10:00")]


def test_deleted_while_in_doubt_is_retracted(w: World) -> None:
    """A meeting deleted while its booking was in doubt: the found entry goes."""
    (event_id,) = _in_doubt(w, "Apollo review")
    w.calendar.delete_event(event_id)

    w.run_pass()

    assert w.entries() == []
    assert w.record(event_id).state == "retracted"


def test_declined_while_in_doubt_is_retracted(w: World) -> None:
    """A 502 after InLoox committed, then the meeting is declined: entry retracted."""
    event_id = w.add("Apollo review", at(19, 9))
    w.sim.faults.bad_gateway_after_commit(1)
    w.run_pass()
    w.calendar.update_event(event_id, response="declined")

    w.run_pass()

    assert w.entries() == []
    assert w.record(event_id).state == "retracted"


def test_moved_beyond_backdating_limit_is_retracted(w: World) -> None:
    """A booked meeting moved back beyond InLoox's limit: its entry is retracted."""
    event_id = w.add("Apollo review", at(19, 9))
    w.run_pass()
    w.calendar.update_event(event_id, start=at(1, 9).replace(month=1),
                            end=at(1, 10).replace(month=1))

    result = w.run_pass()

    assert (result.retracted, result.failed) == (1, 0)
    assert w.entries() == []


def test_in_doubt_without_times_is_never_booked_again(w: World) -> None:
    """A claim in doubt whose times are unknown cannot be looked up: not rebooked."""
    w.ledger.claim(ALICE, "AAMk-unknown", project_id=APOLLO, task_id=None,
                   start=None, end=None, all_day=False, series_master_id=None)
    w.ledger.transition(ALICE, "AAMk-unknown", State.IN_DOUBT)

    w.run_pass()

    assert w.entries() == []
    assert w.record("AAMk-unknown").state == "failed_permanent"


def _book_by_hand(w: World, api_key: str, start: str, end: str) -> str:
    """A time entry typed into InLoox by its owner, not by syncd."""
    response = httpx.post(
        f"{w.sim.inloox_url}/TimeEntry", verify=w.sim.ssl_context(),
        headers={"x-api-key": api_key},
        json={"ProjectId": APOLLO, "StartDateTime": start, "EndDateTime": end,
              "DisplayName": "Apollo review"})
    response.raise_for_status()
    return str(response.json()["TimeEntryId"])


def _with_bob(tmp_path: Path, **settings: Any) -> World:
    """Alice's world, plus Bob, whose entries Alice's key can read."""
    scenario = copy.deepcopy(SCENARIO)
    scenario["settings"].update(entry_visibility="all", **settings)
    scenario["users"].append(
        {"mailbox": BOB, "name": "Bob", "timezone": "Europe/Berlin",
         "inloox": {"contact_id": "b2d4f6a8-2222-4b3c-8d4e-6f8a0b2c4d6e",
                    "api_key": BOB_KEY}})
    return World(tmp_path, scenario=parse_scenario(scenario))


def _alices_entries(w: World, day: str) -> list[str]:
    return [e["TimeEntryId"] for e in w.sim.inloox_entries(ALICE)
            if e["StartDateTime"].startswith(day)]


def test_lookup_after_a_restart_never_takes_a_colleagues_entry(
        tmp_path: Path) -> None:
    """Bob booked the same meeting by hand and Alice's key can read his
    entries: Alice's booking in doubt after a restart finds her own entry."""
    w = _with_bob(tmp_path)
    try:
        w.add("Apollo planning", at(18, 9))
        w.run_pass()
        bobs = _book_by_hand(w, BOB_KEY, "2026-03-19T09:00:00Z",
                             "2026-03-19T10:00:00Z")
        w.loop.run_until_complete(w.runner.aclose())
        w.runner = Runner(w.config, w.ledger, clock=w.clock)  # a restart
        event_id = w.add("Apollo review", at(19, 9))
        w.sim.faults.drop_after_commit(1)
        w.run_pass()
        assert w.record(event_id).state == "in_doubt"

        w.run_pass()

        alices = _alices_entries(w, "2026-03-19")
        assert len(alices) == 1
        assert w.record(event_id).entry_id == alices[0] != bobs
    finally:
        w.close()


def test_empty_answers_never_take_a_colleagues_entry(tmp_path: Path) -> None:
    """Creates answer empty (the performer is never shown) and Bob booked the
    same meeting by hand: Alice's record never holds Bob's entry, and once
    one of her entries is known the next lookups are narrowed to her."""
    w = _with_bob(tmp_path, create_response="empty204")
    try:
        bobs = _book_by_hand(w, BOB_KEY, "2026-03-19T09:00:00Z",
                             "2026-03-19T10:00:00Z")
        review = w.add("Apollo review", at(19, 9))
        w.run_pass()
        planning = w.add("Apollo planning", at(18, 9))
        w.run_pass()
        again = w.add("Apollo retro", at(19, 9), categories=["Apollo"])
        w.loop.run_until_complete(w.runner.aclose())
        w.runner = Runner(w.config, w.ledger, clock=w.clock)  # a restart

        w.run_pass()

        assert w.record(review).state == "booked"
        assert w.record(review).entry_id != bobs
        assert w.record(planning).entry_id == _alices_entries(w, "2026-03-18")[0]
        assert w.record(again).entry_id in _alices_entries(w, "2026-03-19")
        assert w.record(again).entry_id != bobs
    finally:
        w.close()


def test_a_recovered_booking_is_counted_once(w: World) -> None:
    """The pass that finds the entry of a booking in doubt counts that event
    once (as booked), not also as unchanged."""
    _in_doubt(w, "Apollo review")

    result = w.run_pass()

    assert (result.seen, result.booked, result.unchanged) == (1, 1, 0)
