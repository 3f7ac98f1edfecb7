"""The event-record contract, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from syncd.errors import LedgerError
from syncd.ledger import Ledger, Record, State, StateConflict
from tests.ledger.helpers import FakeClock

USER = "alice@contoso.example"
OTHER = "bob@contoso.example"
PROJECT = "6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10"
START = datetime(2025, 1, 14, 9, 0, tzinfo=UTC)
END = datetime(2025, 1, 14, 10, 0, tzinfo=UTC)


def claim(ledger: Ledger, event_id: str = "ev-1", user: str = USER) -> Record | None:
    return ledger.claim(
        user,
        event_id,
        project_id=PROJECT,
        task_id=None,
        start=START,
        end=END,
        all_day=False,
        series_master_id=None,
    )


def skip(ledger: Ledger, event_id: str = "ev-1", reason: str = "private") -> Record:
    return ledger.record_skip(
        USER,
        event_id,
        reason,
        start=START,
        end=END,
        all_day=False,
        series_master_id=None,
    )


def put(ledger: Ledger, state: State, event_id: str = "ev-1", **fields: Any) -> None:
    """Bring a record into ``state`` through the public API."""
    claim(ledger, event_id)
    ledger.transition(USER, event_id, state, **fields)


def test_claim_inserts_a_pending_record(ledger: Ledger, clock: FakeClock) -> None:
    """A first claim creates a PENDING record with one attempt, committed."""
    record = claim(ledger)

    assert record is not None
    assert (record.state, record.attempts, record.project_id) == (
        State.PENDING,
        1,
        PROJECT,
    )
    assert (record.start, record.end) == (START, END)
    assert record.created_at == clock.now
    assert ledger.get(USER, "ev-1") == record


def test_claim_keeps_timestamps_aware_utc(ledger: Ledger) -> None:
    """An instant given in another zone comes back as the same UTC instant."""
    berlin = datetime(2025, 1, 14, 11, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    claimed = ledger.claim(
        USER,
        "ev-1",
        project_id=PROJECT,
        task_id=None,
        start=berlin,
        end=berlin,
        all_day=False,
        series_master_id=None,
    )

    stored = ledger.get(USER, "ev-1")
    assert stored is not None and stored.start == datetime(2025, 1, 14, 10, tzinfo=UTC)
    assert stored.start.utcoffset() == timedelta(0)
    assert claimed == stored
    assert claimed is not None and claimed.start is not None
    assert claimed.start.utcoffset() == timedelta(0)


def test_all_day_dates_are_stored_as_midnight_utc(ledger: Ledger) -> None:
    """An all-day event's dates become midnight UTC with all_day set."""
    record = ledger.claim(
        USER,
        "ev-1",
        project_id=PROJECT,
        task_id="t1",
        start=date(2025, 1, 14),
        end=date(2025, 1, 15),
        all_day=True,
        series_master_id="master-1",
    )

    assert record is not None
    assert record.start == datetime(2025, 1, 14, tzinfo=UTC)
    assert record.end == datetime(2025, 1, 15, tzinfo=UTC)
    assert (record.all_day, record.series_master_id, record.task_id) == (
        True,
        "master-1",
        "t1",
    )


@pytest.mark.parametrize(
    "state",
    [
        State.PENDING,
        State.BOOKED,
        State.IN_DOUBT,
        State.FAILED_PERMANENT,
        State.BILLED_LOCKED,
    ],
)
def test_claim_refuses_records_in_flight_or_done(ledger: Ledger, state: State) -> None:
    """Booked, pending, in-doubt, permanently failed or billed: no claim."""
    put(ledger, state)

    assert claim(ledger) is None
    assert ledger.get(USER, "ev-1").state is state  # type: ignore[union-attr]


@pytest.mark.parametrize("state", [State.SKIPPED, State.RETRACTED])
def test_claim_takes_over_skipped_and_retracted(ledger: Ledger, state: State) -> None:
    """A skipped or retracted record is claimed again; attempts count on."""
    put(ledger, state, entry_id="entry-9", reason="was skipped")

    record = claim(ledger)

    assert record is not None
    assert (record.state, record.attempts, record.reason) == (State.PENDING, 2, None)
    assert record.entry_id == "entry-9"


def test_claim_takes_failed_transient_only_when_due(
    ledger: Ledger, clock: FakeClock
) -> None:
    """A transient failure is claimable once its next attempt time has come."""
    put(
        ledger, State.FAILED_TRANSIENT, next_attempt_at=clock.now + timedelta(minutes=5)
    )

    early = claim(ledger)
    clock.advance(minutes=5)
    due = claim(ledger)

    assert early is None
    assert due is not None and due.state is State.PENDING and due.attempts == 2


def test_claim_race_has_exactly_one_winner(ledger: Ledger) -> None:
    """Ten threads claim the same event at once: exactly one gets it."""
    barrier = threading.Barrier(10)
    results: list[Record | None] = []
    errors: list[BaseException] = []

    def racer() -> None:
        barrier.wait()
        try:
            results.append(claim(ledger, "contested"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len([r for r in results if r is not None]) == 1
    assert ledger.get(USER, "contested").attempts == 1  # type: ignore[union-attr]


def test_reclaim_race_has_exactly_one_winner(ledger: Ledger) -> None:
    """Ten threads re-claim one skipped event at once: exactly one gets it."""
    skip(ledger, "contested")
    barrier = threading.Barrier(10)
    results: list[Record | None] = []

    def racer() -> None:
        barrier.wait()
        results.append(claim(ledger, "contested"))

    threads = [threading.Thread(target=racer) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(results) == 10
    assert len([r for r in results if r is not None]) == 1


def test_transition_with_expect_moves_the_record(ledger: Ledger) -> None:
    """A transition from an expected state applies its fields and stamps booked_at."""
    claim(ledger)

    record = ledger.transition(
        USER, "ev-1", State.BOOKED, expect=[State.PENDING], entry_id="entry-1"
    )

    assert (record.state, record.entry_id) == (State.BOOKED, "entry-1")
    assert record.booked_at is not None


def test_transition_conflict_leaves_the_record_alone(ledger: Ledger) -> None:
    """A transition from an unexpected state raises StateConflict, changes nothing."""
    put(ledger, State.BOOKED, entry_id="entry-1")

    with pytest.raises(StateConflict) as raised:
        ledger.transition(
            USER, "ev-1", State.IN_DOUBT, expect=[State.PENDING], last_error="x"
        )

    assert raised.value.current is State.BOOKED
    assert isinstance(raised.value, LedgerError)
    stored = ledger.get(USER, "ev-1")
    assert stored is not None and (stored.state, stored.last_error) == (
        State.BOOKED,
        None,
    )


def test_transition_of_a_missing_record_conflicts(ledger: Ledger) -> None:
    """There is nothing to move when the record does not exist."""
    with pytest.raises(StateConflict) as raised:
        ledger.transition(USER, "nope", State.BOOKED)

    assert raised.value.current is None


def test_move_is_a_transition_without_the_record(ledger: Ledger) -> None:
    """move() applies the fields like transition() and returns nothing."""
    claim(ledger)

    moved = ledger.move(USER, "ev-1", State.BOOKED, expect=[State.PENDING],
                        entry_id="entry-1")

    stored = ledger.get(USER, "ev-1")
    assert moved is None
    assert stored is not None and (stored.state, stored.entry_id) == (
        State.BOOKED,
        "entry-1",
    )
    assert stored.booked_at is not None


def test_move_conflicts_like_transition(ledger: Ledger) -> None:
    """move() from an unexpected state, or of a missing record, conflicts."""
    put(ledger, State.BOOKED, entry_id="entry-1")

    with pytest.raises(StateConflict) as wrong_state:
        ledger.move(USER, "ev-1", State.IN_DOUBT, expect=[State.PENDING])
    with pytest.raises(StateConflict) as missing:
        ledger.move(USER, "nope", State.BOOKED)

    assert (wrong_state.value.current, missing.value.current) == (State.BOOKED, None)
    stored = ledger.get(USER, "ev-1")
    assert stored is not None and stored.state is State.BOOKED


def test_transition_rejects_unknown_fields(ledger: Ledger) -> None:
    """A misspelt field is a programming error, not a silent no-op."""
    claim(ledger)

    with pytest.raises(TypeError, match="entryid"):
        ledger.transition(USER, "ev-1", State.BOOKED, entryid="x")


@pytest.mark.parametrize(
    "state", [State.BOOKED, State.PENDING, State.IN_DOUBT, State.BILLED_LOCKED]
)
def test_record_skip_never_overwrites_a_possible_entry(
    ledger: Ledger, state: State
) -> None:
    """A skip returns the existing record when an InLoox entry may exist."""
    put(ledger, state, entry_id="entry-1")

    returned = skip(ledger)

    assert returned.state is state and returned.entry_id == "entry-1"
    assert ledger.get(USER, "ev-1") == returned


def test_record_skip_inserts_and_updates_the_reason(ledger: Ledger) -> None:
    """A new event is recorded as skipped; a later skip replaces the reason."""
    first = skip(ledger, reason="private")
    second = skip(ledger, reason="declined")

    assert (first.state, first.reason, first.attempts) == (State.SKIPPED, "private", 0)
    assert (second.state, second.reason) == (State.SKIPPED, "declined")


def test_records_returns_one_users_records(ledger: Ledger) -> None:
    """records() maps event ids to records of that user only."""
    claim(ledger, "ev-1")
    skip(ledger, "ev-2")
    claim(ledger, "ev-3", user=OTHER)

    records = ledger.records(USER)

    assert sorted(records) == ["ev-1", "ev-2"]
    assert records["ev-2"].state is State.SKIPPED


def test_forget_deletes_the_record(ledger: Ledger) -> None:
    """A forgotten record is gone; forgetting it again reports nothing deleted."""
    skip(ledger)

    assert ledger.forget(USER, "ev-1") is True
    assert ledger.get(USER, "ev-1") is None
    assert ledger.forget(USER, "ev-1") is False


def test_due_retries_lists_in_doubt_and_due_failures(
    ledger: Ledger, clock: FakeClock
) -> None:
    """In-doubt records and transient failures whose time has come are due."""
    put(ledger, State.IN_DOUBT, "doubt")
    put(ledger, State.FAILED_TRANSIENT, "due", next_attempt_at=clock.now)
    put(
        ledger,
        State.FAILED_TRANSIENT,
        "later",
        next_attempt_at=clock.now + timedelta(hours=1),
    )
    put(ledger, State.FAILED_PERMANENT, "permanent")

    due = ledger.due_retries(USER, clock.now)

    assert sorted(r.event_id for r in due) == ["doubt", "due"]


def test_mark_pending_in_doubt_recovers_interrupted_claims(ledger: Ledger) -> None:
    """A claim left PENDING by a dead pass becomes IN_DOUBT, to be looked up."""
    claim(ledger, "interrupted")
    put(ledger, State.BOOKED, "done")

    count = ledger.mark_pending_in_doubt(USER)

    assert count == 1
    assert ledger.get(USER, "interrupted").state is State.IN_DOUBT  # type: ignore[union-attr]
    assert ledger.get(USER, "done").state is State.BOOKED  # type: ignore[union-attr]


def test_reset_failed_makes_failures_claimable(
    ledger: Ledger, clock: FakeClock
) -> None:
    """`syncd retry` turns failed records into due transient failures."""
    put(ledger, State.FAILED_PERMANENT, "p1", attempts=1)
    put(
        ledger,
        State.FAILED_TRANSIENT,
        "t1",
        next_attempt_at=clock.now + timedelta(days=1),
    )
    put(ledger, State.BOOKED, "b1")
    claim(ledger, "p2", user=OTHER)
    ledger.transition(OTHER, "p2", State.FAILED_PERMANENT)

    count = ledger.reset_failed(USER)

    assert count == 2
    reset = ledger.get(USER, "p1")
    assert reset is not None
    assert (reset.state, reset.next_attempt_at, reset.attempts) == (
        State.FAILED_TRANSIENT,
        clock.now,
        0,
    )
    assert claim(ledger, "t1") is not None
    assert ledger.get(OTHER, "p2").state is State.FAILED_PERMANENT  # type: ignore[union-attr]


def test_reset_failed_for_one_event(ledger: Ledger) -> None:
    """With an event id only that record is reset."""
    put(ledger, State.FAILED_PERMANENT, "p1")
    put(ledger, State.FAILED_PERMANENT, "p2")

    assert ledger.reset_failed(USER, "p2") == 1
    assert ledger.get(USER, "p1").state is State.FAILED_PERMANENT  # type: ignore[union-attr]


def test_ping_answers(ledger: Ledger) -> None:
    """A reachable ledger pings without error."""
    ledger.ping()


def test_entries_taken_sees_every_user_but_the_asking_record(ledger: Ledger) -> None:
    """An in-doubt lookup never adopts an entry another record (any user) holds."""
    claim(ledger, "ev-1", USER)
    claim(ledger, "ev-2", OTHER)
    ledger.transition(USER, "ev-1", State.BOOKED, entry_id="E-1")
    ledger.transition(OTHER, "ev-2", State.BOOKED, entry_id="E-2")

    taken = ledger.entries_taken(["E-1", "E-2", "E-3"], user=USER, event_id="ev-1")

    assert taken == {"E-2"}
