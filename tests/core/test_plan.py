"""The planner: a round, the rules and the ledger become small actions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from syncd import plan as planner
from syncd.ledger import Record, State
from syncd.model import EventType

from .factories import APOLLO, DEFAULT, NOW, ZEPHYR, at, event, user


def record(event_id: str = "AAMkEv1", state: State = State.BOOKED,
           **fields: Any) -> Record:
    values: dict[str, Any] = {
        "user": "alice@contoso.example", "event_id": event_id, "state": state,
        "reason": None, "project_id": DEFAULT, "task_id": None, "entry_id": "E-1",
        "start": at(16, 9), "end": at(16, 10), "all_day": False,
        "series_master_id": None, "attempts": 1, "next_attempt_at": None,
        "last_error": None, "created_at": NOW, "updated_at": NOW, "booked_at": NOW,
    }
    values.update(fields)
    return Record(**values)


def kinds(actions: list[Any]) -> list[tuple[str, str]]:
    return [(a.kind, a.event_id) for a in actions]


def run(events: list[Any], known: list[Record], *, gone: frozenset[str] = frozenset(),
        now: datetime = NOW, **policy: Any) -> list[Any]:
    round_ = planner.Round(events={e.id: e for e in events}, gone=gone)
    return planner.plan(round_, {r.event_id: r for r in known}, user(**policy), now=now)


def test_new_bookable_event_is_created() -> None:
    """An unknown bookable event becomes a create on its project."""
    actions = run([event()], [])

    assert kinds(actions) == [("create", "AAMkEv1")]
    assert actions[0].decision.project == DEFAULT


def test_replayed_round_books_nothing_twice() -> None:
    """A booked, unchanged event in a replayed round is left alone."""
    actions = run([event()], [record()])

    assert kinds(actions) == [("nothing", "AAMkEv1")]


def test_skip_is_recorded_once() -> None:
    """A skip is recorded the first time and not again when it reappears."""
    first = run([event(show_as="free")], [])
    again = run([event(show_as="free")],
                [record(state=State.SKIPPED, reason="free", entry_id=None,
                        project_id=None)])

    assert kinds(first) == [("skip", "AAMkEv1")]
    assert kinds(again) == [("nothing", "AAMkEv1")]


def test_moved_meeting_updates_times() -> None:
    """on_change: update patches start and end of the booked entry."""
    actions = run([event(start=at(16, 11), end=at(16, 12))], [record()])

    assert kinds(actions) == [("update", "AAMkEv1")]
    assert actions[0].changes == {"start": at(16, 11), "end": at(16, 12)}


def test_moved_meeting_ignored_when_configured() -> None:
    """on_change: ignore leaves the entry's times alone."""
    actions = run([event(start=at(16, 11), end=at(16, 12))], [record()],
                  on_change="ignore")

    assert kinds(actions) == [("nothing", "AAMkEv1")]


def test_recategorised_meeting_moves_project() -> None:
    """A booked event that now matches another rule gets the new project."""
    actions = run([event(categories=("Track", "Apollo"))], [record()])

    assert kinds(actions) == [("update", "AAMkEv1")]
    assert actions[0].changes == {"project_id": APOLLO}


def test_cancelled_after_booking_is_retracted() -> None:
    """on_cancel: retract deletes the entry of a meeting cancelled after booking."""
    actions = run([event(is_cancelled=True)], [record()])

    assert kinds(actions) == [("retract", "AAMkEv1")]


def test_declined_after_booking_kept_when_configured() -> None:
    """on_cancel: keep leaves the entry of a declined meeting."""
    actions = run([event(response="declined")], [record()], on_cancel="keep")

    assert kinds(actions) == [("nothing", "AAMkEv1")]


def test_deleted_booked_event_is_retracted() -> None:
    """A booked event confirmed gone is retracted."""
    actions = run([], [record()], gone=frozenset({"AAMkEv1"}))

    assert kinds(actions) == [("retract", "AAMkEv1")]


def test_deleted_unbooked_event_is_forgotten() -> None:
    """A skipped event that was deleted is dropped from the ledger."""
    skipped = record(state=State.SKIPPED, reason="free", entry_id=None)

    actions = run([], [skipped], gone=frozenset({"AAMkEv1"}))

    assert kinds(actions) == [("forget", "AAMkEv1")]


def test_frozen_entries_are_never_touched() -> None:
    """A booking older than freeze_after (7 days) is not updated any more."""
    old = record(start=NOW - timedelta(days=9), end=NOW - timedelta(days=9) +
                 timedelta(hours=1))
    moved = event(start=NOW - timedelta(days=9, hours=-2),
                  end=NOW - timedelta(days=9, hours=-3))

    actions = run([moved], [old])

    assert kinds(actions) == [("nothing", "AAMkEv1")]


def test_billed_entry_is_never_changed() -> None:
    """A billed_locked record is left alone even when the meeting is cancelled."""
    actions = run([event(is_cancelled=True)], [record(state=State.BILLED_LOCKED)])

    assert kinds(actions) == [("nothing", "AAMkEv1")]


def test_in_doubt_is_recovered_not_created() -> None:
    """An in-doubt claim is looked up before any new create."""
    actions = run([event()], [record(state=State.IN_DOUBT, entry_id=None)])

    assert kinds(actions) == [("recover", "AAMkEv1")]


def test_pending_outside_round_is_recovered() -> None:
    """A pending claim left by a crash is recovered even when the round is quiet."""
    actions = run([], [record(state=State.PENDING, entry_id=None)])

    assert kinds(actions) == [("recover", "AAMkEv1")]


def test_transient_failure_waits_for_its_time() -> None:
    """A transient failure is retried only once next_attempt_at has passed."""
    early = record(state=State.FAILED_TRANSIENT, entry_id=None,
                   next_attempt_at=NOW + timedelta(minutes=5))
    due = record(state=State.FAILED_TRANSIENT, entry_id=None,
                 next_attempt_at=NOW - timedelta(minutes=5))

    assert kinds(run([], [early])) == []
    assert kinds(run([], [due])) == [("create", "AAMkEv1")]


def test_permanent_failure_is_not_retried() -> None:
    """A permanent failure waits for `syncd retry`."""
    failed = record(state=State.FAILED_PERMANENT, entry_id=None)

    assert kinds(run([event()], [failed])) == [("nothing", "AAMkEv1")]


def test_waiting_event_is_booked_after_it_ends() -> None:
    """A not_ended skip with a stored project becomes a create once it has ended."""
    waiting = record(state=State.SKIPPED, reason="not_ended", entry_id=None,
                     start=NOW - timedelta(hours=2), end=NOW - timedelta(hours=1))

    actions = run([], [waiting])

    assert kinds(actions) == [("create", "AAMkEv1")]
    assert actions[0].decision.project == DEFAULT


def test_series_keeps_first_project() -> None:
    """An occurrence recategorised later books on the series' first project."""
    first = record("occ-1", series_master_id="master-1", project_id=APOLLO)
    later = event("occ-2", type=EventType.OCCURRENCE, series_master_id="master-1",
                  start=at(17, 9), end=at(17, 10), subject="[ZEPHYR] standup",
                  categories=())

    actions = run([later], [first])

    assert kinds(actions) == [("create", "occ-2")]
    assert actions[0].decision.project == APOLLO


def test_unknown_project_name_is_skipped() -> None:
    """A rule naming a project InLoox does not know cannot book."""
    round_ = planner.Round(events={"AAMkEv1": event(categories=("Apollo",))})
    policy = user(rules=[{"match": {"categories": ["Apollo"]}, "project": "Apollo"}])

    actions = planner.plan(round_, {}, policy, now=NOW, resolve=lambda name: None)

    assert actions[0].decision.reason == "unknown_project:Apollo"


def test_project_names_resolve_to_ids() -> None:
    """Project names in rules book on the id InLoox resolves them to."""
    round_ = planner.Round(events={"AAMkEv1": event(categories=("Apollo",))})
    policy = user(rules=[{"match": {"categories": ["Apollo"]}, "project": "Apollo"}])
    ids = {"Apollo": ZEPHYR}

    actions = planner.plan(round_, {}, policy, now=NOW, resolve=ids.get)

    assert actions[0].decision.project == ZEPHYR


def test_retracted_event_with_our_tag_is_booked_again() -> None:
    """Our own InLoox tag on a retracted event is not "booked elsewhere"."""
    retracted = record(state=State.RETRACTED, reason="declined", entry_id="E-1")

    actions = run([event(categories=("Track", "InLoox"))], [retracted])

    assert kinds(actions) == [("create", "AAMkEv1")]


def test_ids_are_case_sensitive() -> None:
    """An id differing only in letter case is another event."""
    actions = run([event("AAMkev1")], [record("AAMkEv1")])

    assert ("create", "AAMkev1") in kinds(actions)


def test_waiting_event_moved_is_recorded_again() -> None:
    """A not_ended skip whose meeting moved is recorded with the new times."""
    waiting = record(state=State.SKIPPED, reason="not_ended", entry_id=None,
                     start=NOW - timedelta(minutes=30), end=NOW + timedelta(minutes=30))
    moved = event(start=NOW + timedelta(hours=1), end=NOW + timedelta(hours=2))

    actions = run([moved], [waiting])

    assert kinds(actions) == [("skip", "AAMkEv1")]
    assert actions[0].decision.project == DEFAULT


def test_booked_event_moved_into_the_future_is_retracted() -> None:
    """A booked meeting moved to a time not over yet is retracted until it ends."""
    moved = event(start=NOW + timedelta(hours=1), end=NOW + timedelta(hours=2))

    actions = run([moved], [record()])

    assert kinds(actions) == [("retract", "AAMkEv1")]
    assert actions[0].decision.reason == "not_ended"


def test_retracted_waiting_event_is_booked_after_it_ends() -> None:
    """A retraction that waits (not_ended) becomes a create once the meeting ended."""
    waited = record(state=State.RETRACTED, reason="not_ended",
                    start=NOW - timedelta(hours=2), end=NOW - timedelta(hours=1))

    assert kinds(run([], [waited])) == [("create", "AAMkEv1")]


def test_deleted_billed_entry_is_kept_in_the_ledger() -> None:
    """A billed_locked record of a deleted event is neither retracted nor forgotten."""
    billed = record(state=State.BILLED_LOCKED)

    actions = run([], [billed], gone=frozenset({"AAMkEv1"}))

    assert kinds(actions) == [("nothing", "AAMkEv1")]


def test_occurrences_book_on_the_masters_project() -> None:
    """An exception recategorised before any booking still books on the series'."""
    master = event("master-1", type=EventType.SERIES_MASTER, categories=("Apollo",))
    exception = event("occ-2", type=EventType.EXCEPTION, series_master_id="master-1",
                      categories=("Track",))
    round_ = planner.Round(events={"occ-2": exception}, masters={"master-1": master})

    actions = planner.plan(round_, {}, user(), now=NOW)

    assert actions[0].decision.project == APOLLO


def test_recategorised_series_overrides_the_first_booking() -> None:
    """A master now mapping to Apollo moves a booked occurrence off the old project."""
    master = event("master-1", type=EventType.SERIES_MASTER, categories=("Apollo",))
    occurrence = event("occ-1", type=EventType.OCCURRENCE, series_master_id="master-1",
                       categories=("Apollo",))
    booked = record("occ-1", series_master_id="master-1", project_id=ZEPHYR)
    round_ = planner.Round(events={"occ-1": occurrence}, masters={"master-1": master})

    actions = planner.plan(round_, {"occ-1": booked}, user(), now=NOW)

    assert kinds(actions) == [("update", "occ-1")]
    assert actions[0].changes == {"project_id": APOLLO}


def test_task_name_cannot_be_booked() -> None:
    """A rule naming its task (not its id) skips as unknown_task."""
    policy = user(rules=[{"match": {"categories": ["Apollo"]}, "project": APOLLO,
                          "task": "Design"}])
    round_ = planner.Round(events={"AAMkEv1": event(categories=("Apollo",))})

    actions = planner.plan(round_, {}, policy, now=NOW,
                           resolve=lambda v: v if v == APOLLO else None)

    assert actions[0].decision.reason == "unknown_task:Design"
