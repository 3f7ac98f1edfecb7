"""due_work: what a quiet pass must act on, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from syncd import plan as planner
from syncd.ledger import Ledger, State
from tests.ledger.helpers import FakeClock

USER = "alice@contoso.example"
OTHER = "bob@contoso.example"
PROJECT = "6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10"


def claim(ledger: Ledger, clock: FakeClock, event_id: str, user: str = USER,
          ended_ago: timedelta = timedelta(hours=1)) -> None:
    end = clock.now - ended_ago
    ledger.claim(user, event_id, project_id=PROJECT, task_id=None,
                 start=end - timedelta(hours=1), end=end, all_day=False,
                 series_master_id=None)


def put(ledger: Ledger, clock: FakeClock, state: State, event_id: str,
        **fields: Any) -> None:
    """Bring a record into ``state`` through the public API."""
    claim(ledger, clock, event_id)
    ledger.transition(USER, event_id, state, **fields)


def waiting(ledger: Ledger, clock: FakeClock, event_id: str,
            ends_in: timedelta, reason: str = "not_ended") -> None:
    """A skip that keeps its mapping: booked once the meeting has ended."""
    end = clock.now + ends_in
    ledger.record_skip(USER, event_id, reason, start=end - timedelta(hours=1),
                       end=end, all_day=False, series_master_id=None,
                       project_id=PROJECT)


def fill(ledger: Ledger, clock: FakeClock) -> None:
    """One record of every kind; the ids say whether a quiet pass must act."""
    claim(ledger, clock, "due-pending")
    put(ledger, clock, State.IN_DOUBT, "due-in-doubt")
    put(ledger, clock, State.FAILED_TRANSIENT, "due-retry-now",
        next_attempt_at=clock.now)
    put(ledger, clock, State.FAILED_TRANSIENT, "due-retry-unset",
        next_attempt_at=None)
    put(ledger, clock, State.FAILED_TRANSIENT, "not-retry-later",
        next_attempt_at=clock.now + timedelta(minutes=5))
    put(ledger, clock, State.FAILED_PERMANENT, "not-permanent")
    put(ledger, clock, State.BOOKED, "not-booked")
    put(ledger, clock, State.BILLED_LOCKED, "not-billed")
    waiting(ledger, clock, "due-ended-just-now", timedelta(0))
    waiting(ledger, clock, "not-still-running", timedelta(minutes=1))
    waiting(ledger, clock, "not-private", -timedelta(hours=1), reason="private")
    put(ledger, clock, State.RETRACTED, "due-retracted-waiting",
        reason="not_ended", end=clock.now - timedelta(minutes=1))
    put(ledger, clock, State.RETRACTED, "not-retracted-cancelled",
        reason="cancelled")
    claim(ledger, clock, "not-other-user", user=OTHER)


def test_due_work_lists_exactly_what_a_quiet_pass_acts_on(
    ledger: Ledger, clock: FakeClock
) -> None:
    """Claims in flight or in doubt, due retries and ended waits; nothing else."""
    fill(ledger, clock)

    due = ledger.due_work(USER, clock.now)

    assert sorted(due) == [
        "due-ended-just-now",
        "due-in-doubt",
        "due-pending",
        "due-retracted-waiting",
        "due-retry-now",
        "due-retry-unset",
    ]
    assert due["due-in-doubt"].state is State.IN_DOUBT
    assert due["due-ended-just-now"].project_id == PROJECT


def test_due_work_plans_like_every_record_for_an_empty_round(
    ledger: Ledger, clock: FakeClock
) -> None:
    """An empty round planned on due_work gives the actions it gives on records."""
    fill(ledger, clock)
    policy = SimpleNamespace(backdating_limit=timedelta(days=30))
    empty = planner.Round(events={})

    everything = planner.plan(empty, ledger.records(USER), policy,  # type: ignore[arg-type]
                              now=clock.now)
    narrow = planner.plan(empty, ledger.due_work(USER, clock.now), policy,  # type: ignore[arg-type]
                          now=clock.now)

    assert [(a.kind, a.event_id) for a in narrow] == [
        (a.kind, a.event_id) for a in everything]
    assert len(narrow) == 6


def test_due_work_of_a_user_without_records_is_empty(
    ledger: Ledger, clock: FakeClock
) -> None:
    """A user the ledger has never seen has no work."""
    assert ledger.due_work(USER, clock.now) == {}


def test_cursor_and_due_work_read_both_at_once(
    ledger: Ledger, clock: FakeClock
) -> None:
    """One read gives the stored cursor and the same due work as due_work()."""
    fill(ledger, clock)
    window = (clock.now - timedelta(days=14), clock.now + timedelta(days=1))
    ledger.save_cursor(USER, "https://graph.example/delta?$deltatoken=1", *window)

    cursor, due = ledger.cursor_and_due_work(USER, clock.now)

    assert cursor == ledger.cursor(USER)
    assert cursor is not None and cursor.delta_link == (
        "https://graph.example/delta?$deltatoken=1")
    assert due == ledger.due_work(USER, clock.now)


def test_cursor_and_due_work_of_a_new_user(ledger: Ledger, clock: FakeClock) -> None:
    """No cursor and no work for a user the ledger has never seen."""
    assert ledger.cursor_and_due_work(USER, clock.now) == (None, {})
