"""Delta links, per-user state, pass history and `syncd status`, on both databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncd.ledger import Cursor, Ledger, State, UserState
from tests.ledger.helpers import FakeClock

USER = "alice@contoso.example"
OTHER = "bob@contoso.example"
LINK = "https://graph.microsoft.com/v1.0/users/a/calendarView/delta?$deltatoken=abc"
WINDOW = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 29, tzinfo=UTC))


def put(ledger: Ledger, event_id: str, state: State, **fields: Any) -> None:
    ledger.claim(
        USER,
        event_id,
        project_id="p",
        task_id=None,
        start=None,
        end=None,
        all_day=False,
        series_master_id=None,
    )
    ledger.transition(USER, event_id, state, **fields)


def skip(ledger: Ledger, event_id: str, reason: str) -> None:
    ledger.record_skip(
        USER,
        event_id,
        reason,
        start=None,
        end=None,
        all_day=False,
        series_master_id=None,
    )


def test_cursor_round_trip(ledger: Ledger, clock: FakeClock) -> None:
    """A saved delta link and window come back unchanged; saving again replaces."""
    ledger.save_cursor(USER, "https://old", *WINDOW)
    clock.advance(minutes=5)
    ledger.save_cursor(USER, LINK, *WINDOW)

    assert ledger.cursor(USER) == Cursor(USER, LINK, *WINDOW, updated_at=clock.now)
    assert ledger.cursor(OTHER) is None


def test_drop_cursor_forgets_the_delta_link(ledger: Ledger) -> None:
    """After a 410 the link is dropped and the next pass starts a new round."""
    ledger.save_cursor(USER, LINK, *WINDOW)

    ledger.drop_cursor(USER)

    assert ledger.cursor(USER) is None


def test_user_status_pause_and_resume(ledger: Ledger, clock: FakeClock) -> None:
    """A user is paused with a reason and a time, then set active again."""
    until = clock.now + timedelta(minutes=10)
    ledger.set_user_status(USER, "paused", reason="throttled", paused_until=until)
    paused = ledger.user_state(USER)
    ledger.set_user_status(USER, "active")

    assert paused is not None
    assert (paused.status, paused.reason, paused.paused_until) == (
        "paused",
        "throttled",
        until,
    )
    resumed = ledger.user_state(USER)
    assert resumed is not None
    assert (resumed.status, resumed.reason, resumed.paused_until) == (
        "active",
        None,
        None,
    )


def test_unknown_user_status_is_rejected(ledger: Ledger) -> None:
    """Only active, auth_required and paused exist."""
    with pytest.raises(ValueError, match="sleeping"):
        ledger.set_user_status(USER, "sleeping")


def test_record_pass_tracks_failures_and_success(
    ledger: Ledger, clock: FakeClock
) -> None:
    """Failures count up with the last error; a success resets the count."""
    started = clock.now
    ledger.record_pass(USER, ok=True, summary={"booked": 3}, error=None)
    clock.advance(minutes=5)
    ledger.record_pass(USER, ok=False, summary={"booked": 0}, error="graph 503")
    clock.advance(minutes=5)
    ledger.record_pass(USER, ok=False, summary={"booked": 0}, error="graph 504")
    failing = ledger.user_state(USER)
    clock.advance(minutes=5)
    ledger.record_pass(USER, ok=True, summary={"booked": 1}, error=None)

    assert failing == UserState(
        user=USER,
        status="active",
        paused_until=None,
        reason=None,
        last_pass_at=started + timedelta(minutes=10),
        last_success_at=started,
        last_error="graph 504",
        consecutive_failures=2,
        last_summary={"booked": 0},
    )
    recovered = ledger.user_state(USER)
    assert recovered is not None
    assert (recovered.consecutive_failures, recovered.last_success_at) == (0, clock.now)


def test_pass_history_keeps_the_latest_fifty(ledger: Ledger, clock: FakeClock) -> None:
    """Only the 50 latest passes are kept; status shows the latest failures."""
    for number in range(55):
        clock.advance(minutes=1)
        ledger.record_pass(USER, ok=False, summary={}, error=f"failure {number}")

    report = ledger.status([USER])[0]

    assert [p["error"] for p in report["recent_failed_passes"]] == [
        "failure 54",
        "failure 53",
        "failure 52",
        "failure 51",
        "failure 50",
    ]
    assert ledger.user_state(USER).consecutive_failures == 55  # type: ignore[union-attr]


def test_status_counts_states_reasons_and_failures(
    ledger: Ledger, clock: FakeClock
) -> None:
    """status() reports counts by state and skip reason and recent failures."""
    put(ledger, "b1", State.BOOKED)
    put(ledger, "b2", State.BOOKED)
    skip(ledger, "s1", "private")
    skip(ledger, "s2", "private")
    skip(ledger, "s3", "declined")
    clock.advance(minutes=1)
    put(ledger, "f1", State.FAILED_PERMANENT, last_error="project closed")
    ledger.record_pass(USER, ok=True, summary={"booked": 2}, error=None)

    report = ledger.status()

    assert [entry["user"] for entry in report] == [USER]
    entry = report[0]
    assert entry["counts"] == {
        "pending": 0,
        "booked": 2,
        "in_doubt": 0,
        "failed_transient": 0,
        "failed_permanent": 1,
        "skipped": 3,
        "retracted": 0,
        "billed_locked": 0,
    }
    assert entry["skip_reasons"] == {"private": 2, "declined": 1}
    assert entry["recent_failures"] == [
        {
            "event_id": "f1",
            "state": "failed_permanent",
            "last_error": "project closed",
            "updated_at": "2025-01-15T09:01:00+00:00",
        }
    ]
    assert entry["last_success_at"] == "2025-01-15T09:01:00+00:00"
    assert json.loads(json.dumps(report)) == report


def test_status_of_an_unknown_user_is_empty(ledger: Ledger) -> None:
    """A configured user the ledger never saw has zero counts and no history."""
    entry = ledger.status([OTHER])[0]

    assert entry["status"] == "active" and entry["last_success_at"] is None
    assert set(entry["counts"].values()) == {0}
    assert entry["recent_failures"] == entry["recent_failed_passes"] == []


def test_status_names_the_replica_holding_the_lease(
        ledger: Ledger, clock: FakeClock) -> None:
    """`syncd status` shows which process serves a user and until when (on
    PostgreSQL; SQLite has one process and no leases)."""
    ledger.acquire_leases("replica-a", [USER], ttl=timedelta(minutes=2))

    leased, other = ledger.status([USER, OTHER])

    if ledger.dialect == "postgresql":
        assert leased["lease"] == {
            "owner": "replica-a",
            "expires_at": (clock() + timedelta(minutes=2)).isoformat()}
    else:
        assert leased["lease"] is None
    assert other["lease"] is None
