"""Booking policies against the simulator: what is booked, where, and after changes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from structlog.testing import capture_logs

from syncd.projects import check_project_names

from .world import ALICE, APOLLO, INTERNAL, NOW, ZEPHYR, World, at, world


def test_running_meeting_waits_and_is_booked_once_it_ends(w: World) -> None:
    """A meeting not over yet is skipped as not_ended, then booked after its end."""
    event_id = w.add("Apollo review", NOW - timedelta(minutes=30))
    waiting = w.run_pass()
    w.clock.advance(timedelta(hours=1))

    ended = w.run_pass()

    assert (waiting.skipped, waiting.booked, ended.booked) == ({"not_ended": 1}, 0, 1)
    assert w.booked() == [(APOLLO, "2026-03-20T16:30", "2026-03-20T17:30")]
    assert w.record(event_id).state == "booked"


def test_waiting_meeting_moved_later_waits_for_its_new_end(w: World) -> None:
    """A waiting meeting moved later is not booked at its old end time."""
    event_id = w.add("Apollo review", NOW - timedelta(minutes=30))
    w.run_pass()
    w.calendar.update_event(event_id, start=NOW + timedelta(hours=1),
                            end=NOW + timedelta(hours=2))
    w.run_pass()
    w.clock.advance(timedelta(hours=1))

    early = w.run_pass()
    w.clock.advance(timedelta(hours=1))
    late = w.run_pass()

    assert (early.booked, late.booked) == (0, 1)
    assert w.booked() == [(APOLLO, "2026-03-20T18:00", "2026-03-20T19:00")]


def test_waiting_meeting_recategorised_books_on_the_new_project(w: World) -> None:
    """A meeting recategorised while it waits is booked on its new project."""
    event_id = w.add("Review", NOW - timedelta(minutes=30))
    w.run_pass()
    w.calendar.update_event(event_id, categories=["Zephyr"])
    w.run_pass()
    w.clock.advance(timedelta(hours=1))

    w.run_pass()

    assert [b[0] for b in w.booked()] == [ZEPHYR]


def test_booked_meeting_moved_into_the_future_is_booked_again_after(w: World) -> None:
    """Moved to a time not over yet: retracted now, booked again once it ends."""
    event_id = w.add("Apollo review", at(19, 9))
    w.run_pass()
    w.calendar.update_event(event_id, start=NOW + timedelta(hours=1),
                            end=NOW + timedelta(hours=2))

    moved = w.run_pass()
    entries_while_waiting = w.booked()
    w.clock.advance(timedelta(hours=3))
    ended = w.run_pass()

    assert (moved.retracted, entries_while_waiting, ended.booked) == (1, [], 1)
    assert w.booked() == [(APOLLO, "2026-03-20T18:00", "2026-03-20T19:00")]


def test_skips_are_recorded_with_reason_and_not_retried(w: World) -> None:
    """Each skip is recorded once with its reason; the next pass leaves it."""
    free = w.add("Apollo focus", at(19, 9), show_as="free")
    cancelled = w.add("Apollo call", at(19, 11), is_cancelled=True)
    declined = w.add("Apollo sync", at(19, 13), response="declined")
    first = w.run_pass()
    w.sim.faults.expire_delta(ALICE)

    again = w.run_pass()

    assert first.skipped == {"free": 1, "cancelled": 1, "declined": 1}
    assert again.skipped == {} and w.entries() == []
    assert [w.record(i).reason for i in (free, cancelled, declined)] == [
        "free", "cancelled", "declined"]


def test_event_tagged_by_someone_else_is_booked_elsewhere(w: World) -> None:
    """The InLoox category on an event the ledger does not know: never booked."""
    event_id = w.add("Apollo review", at(19, 9), categories=["Apollo", "InLoox"])

    w.run_pass()

    assert w.record(event_id).reason == "booked_elsewhere" and w.entries() == []


def test_too_long_and_too_old_events_are_skipped(tmp_path: Path) -> None:
    """max_duration 2h and backdating_limit 3d are honoured as configured."""
    with world(tmp_path, max_duration="2h", backdating_limit="3d") as w:
        long = w.add("Apollo workshop", at(19, 8), hours=3)
        old = w.add("Apollo review", at(10, 9))

        w.run_pass()

        assert (w.record(long).reason, w.record(old).reason) == ("too_long", "too_old")


def test_meeting_in_another_zone_is_booked_at_its_utc_instant(w: World) -> None:
    """A meeting at 08:00 Los Angeles (PDT, UTC-7) is booked at 15:00 UTC."""
    w.calendar.add_event(subject="Apollo west", start="2026-03-19T08:00:00",
                         end="2026-03-19T09:00:00", time_zone="America/Los_Angeles",
                         categories=["Apollo"])

    w.run_pass()

    assert w.booked() == [(APOLLO, "2026-03-19T15:00", "2026-03-19T16:00")]


def test_moved_meeting_updates_the_entry(w: World) -> None:
    """on_change: update moves the entry with the meeting."""
    event_id = w.add("Apollo review", at(19, 9))
    w.run_pass()
    w.calendar.update_event(event_id, start=at(19, 10), end=at(19, 11, 30))

    assert w.run_pass().updated == 1
    assert w.booked() == [(APOLLO, "2026-03-19T10:00", "2026-03-19T11:30")]


def test_moved_meeting_is_ignored_when_configured(tmp_path: Path) -> None:
    """on_change: ignore keeps the entry's times."""
    with world(tmp_path, on_change="ignore") as w:
        event_id = w.add("Apollo review", at(19, 9))
        w.run_pass()
        w.calendar.update_event(event_id, start=at(19, 10), end=at(19, 11))

        w.run_pass()

        assert w.booked() == [(APOLLO, "2026-03-19T09:00", "2026-03-19T10:00")]


def test_declined_after_booking_is_retracted(w: World) -> None:
    """on_cancel: retract deletes the entry of a meeting declined after booking."""
    event_id = w.add("Apollo review", at(19, 9))
    w.run_pass()
    w.calendar.update_event(event_id, response="declined")

    assert w.run_pass().retracted == 1
    assert w.entries() == []


def test_cancelled_after_booking_is_kept_when_configured(tmp_path: Path) -> None:
    """on_cancel: keep leaves the entry of a cancelled meeting."""
    with world(tmp_path, on_cancel="keep") as w:
        event_id = w.add("Apollo review", at(19, 9))
        w.run_pass()
        w.calendar.update_event(event_id, is_cancelled=True)

        w.run_pass()

        assert w.booked() == [(APOLLO, "2026-03-19T09:00", "2026-03-19T10:00")]


def test_billed_entry_is_never_deleted_and_warned_once(w: World) -> None:
    """A billed entry of a cancelled meeting stays; billed_locked, one warning."""
    event_id = w.add("Apollo review", at(19, 9))
    w.run_pass()
    w.sim.set_billed(w.entries()[0]["TimeEntryId"])
    w.calendar.update_event(event_id, is_cancelled=True)

    with capture_logs() as logs:
        w.run_pass()
        w.sim.faults.expire_delta(ALICE)
        w.run_pass()

    warnings = [e for e in logs if e["event"] == "entry_billed_locked"]
    assert len(warnings) == 1 and len(w.entries()) == 1
    assert w.record(event_id).state == "billed_locked"


def test_recategorised_meeting_moves_its_entry(w: World) -> None:
    """A booked meeting recategorised to Zephyr has its entry moved to Zephyr."""
    event_id = w.add("Review", at(19, 9))
    w.run_pass()
    w.calendar.update_event(event_id, categories=["Zephyr"])

    assert w.run_pass().updated == 1
    assert [b[0] for b in w.booked()] == [ZEPHYR]


def test_entries_older_than_freeze_after_are_not_touched(w: World) -> None:
    """Eight days later (freeze_after 7d) a moved meeting leaves its entry alone."""
    event_id = w.add("Apollo review", at(12, 9))
    w.run_pass()
    w.clock.advance(timedelta(days=1))
    w.calendar.update_event(event_id, start=at(12, 10), end=at(12, 11))

    w.run_pass()

    assert w.booked() == [(APOLLO, "2026-03-12T09:00", "2026-03-12T10:00")]


def test_project_names_resolve_through_inloox(tmp_path: Path) -> None:
    """A rule naming project "Internal" books on that project's id."""
    rules = [{"match": {"categories": ["Internal"]}, "project": "Internal"},
             {"match": {"categories": ["Nope"]}, "project": "No such project"}]
    with world(tmp_path, rules=rules) as w:
        w.add("Team sync", at(19, 9), categories=["Internal"])
        unknown = w.add("Other", at(19, 11), categories=["Nope"])

        w.run_pass()

        assert [b[0] for b in w.booked()] == [INTERNAL]
        assert w.record(unknown).reason == "unknown_project:No such project"


def test_check_config_reports_unknown_project_names(tmp_path: Path) -> None:
    """check_project_names lists the unknown project name and the task name."""
    rules = [{"match": {"categories": ["Internal"]}, "project": "Internal"},
             {"match": {"categories": ["Nope"]}, "project": "No such project",
              "task": "Design"}]
    with world(tmp_path, rules=rules) as w:
        problems = w.loop.run_until_complete(check_project_names(w.config))

        assert sorted(p.key for p in problems) == ["rules[1].project", "rules[1].task"]
        assert "No such project" in next(p.message for p in problems
                                         if p.key == "rules[1].project")
