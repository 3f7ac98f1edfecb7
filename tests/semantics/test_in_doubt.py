"""Meetings that change while their booking is in doubt, and moves too far back."""

from __future__ import annotations

from syncd.ledger import State

from .world import ALICE, APOLLO, ZEPHYR, World, at


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
