"""Delta rounds against the simulator: windows, paging guards, 410, @removed, ids."""

from __future__ import annotations

from datetime import timedelta

import pytest

from syncd.graph import GraphCalendar

from .world import ALICE, APOLLO, World, at


def test_window_move_starts_new_round_and_books_nothing_twice(w: World) -> None:
    """The next day's window starts a new round; the replay books nothing again."""
    w.add("Apollo review", at(19, 9))
    w.run_pass()
    first_window = w.ledger.cursor(ALICE).window_start

    w.clock.advance(timedelta(days=1))
    result = w.run_pass()

    assert result.ok and result.booked == 0
    assert w.ledger.cursor(ALICE).window_start == first_window + timedelta(days=1)
    assert w.booked() == [(APOLLO, "2026-03-19T09:00", "2026-03-19T10:00")]


def test_window_is_whole_days_in_the_users_zone(w: World) -> None:
    """Lookback 14d from Friday 18:00 Berlin: the window opens at Berlin midnight."""
    w.run_pass()

    cursor = w.ledger.cursor(ALICE)

    assert cursor.window_start.isoformat() == "2026-03-05T23:00:00+00:00"
    assert cursor.window_end.isoformat() == "2026-03-21T23:00:00+00:00"


def test_paging_guard_fails_the_pass_and_keeps_the_link(w: World) -> None:
    """Too many pages: the pass fails, the old delta link stays, nothing is booked."""
    w.add("Apollo review", at(19, 9))
    w.run_pass()
    link = w.ledger.cursor(ALICE).delta_link
    for hour in range(8, 16):
        w.add(f"Apollo {hour}", at(18, hour))
    w.runner._source = _graph(w, max_pages=2)

    failed = w.run_pass()

    assert (failed.ok, failed.error_kind, failed.booked) == (False, "transient", 0)
    assert w.ledger.cursor(ALICE).delta_link == link
    assert len(w.entries()) == 1


def test_pass_after_a_tripped_guard_books_each_event_once(w: World) -> None:
    """Once the guard no longer trips, the replayed round books every event once."""
    w.add("Apollo review", at(19, 9))
    w.run_pass()
    for hour in range(8, 16):
        w.add(f"Apollo {hour}", at(18, hour))
    w.runner._source = _graph(w, max_pages=2)
    w.run_pass()
    w.loop.run_until_complete(w.runner._source.aclose())
    w.runner._source = None

    result = w.run_pass()

    assert (result.ok, result.booked) == (True, 8)
    assert len(w.entries()) == 9


@pytest.mark.parametrize("code", ["SyncStateNotFound", "syncStateNotFound",
                                  "resyncRequired", "RESYNCREQUIRED"])
def test_expired_delta_link_starts_a_new_round(w: World, code: str) -> None:
    """410 with any sync-state code: a new round; known events are not rebooked."""
    w.add("Apollo review", at(19, 9))
    w.run_pass()
    w.sim.faults.expire_delta(ALICE, code)
    w.add("Apollo follow-up", at(19, 14))

    result = w.run_pass()

    assert (result.ok, result.booked) == (True, 1)
    assert [b[1] for b in w.booked()] == ["2026-03-19T09:00", "2026-03-19T14:00"]


def test_removed_unknown_event_does_nothing(w: World) -> None:
    """@removed for an id the ledger never saw: no GET, no record, no entry."""
    w.run_pass()
    stranger = w.add("Apollo never seen", at(19, 9))
    w.calendar.delete_event(stranger)
    w.sim.reset_stats()

    result = w.run_pass()

    gets = [k for k in w.sim.stats.requests if k[0] == "graph" and k[2] == "event"]
    assert result.ok and gets == []
    assert w.record(stranger) is None and w.entries() == []


def test_removed_but_moved_event_is_updated_not_retracted(w: World) -> None:
    """@removed for a booked event that moved out of the window: GET finds it."""
    event_id = w.add("Apollo review", at(19, 9))
    w.run_pass()
    w.calendar.update_event(event_id, start=at(2, 9), end=at(2, 10))

    result = w.run_pass()

    assert (result.ok, result.updated, result.retracted) == (True, 1, 0)
    assert w.booked() == [(APOLLO, "2026-03-02T09:00", "2026-03-02T10:00")]


def test_removed_booked_event_is_retracted_after_a_get(w: World) -> None:
    """A deleted booked event (GET says 404) has its entry retracted."""
    event_id = w.add("Apollo review", at(19, 9))
    w.run_pass()
    w.calendar.delete_event(event_id)

    result = w.run_pass()

    assert (result.ok, result.retracted) == (True, 1)
    assert w.entries() == []
    assert w.record(event_id).state == "retracted"


def test_deleted_while_no_link_was_kept_is_retracted(w: World) -> None:
    """A new round (link expired) without the booked event: confirmed and retracted."""
    event_id = w.add("Apollo review", at(19, 9))
    w.run_pass()
    w.calendar.delete_event(event_id)
    w.sim.faults.expire_delta(ALICE)

    result = w.run_pass()

    assert (result.ok, result.retracted) == (True, 1)
    assert w.entries() == []


def test_requests_ask_for_immutable_ids(w: World) -> None:
    """Every Graph request carries Prefer: IdType="ImmutableId"."""
    w.add("Apollo review", at(19, 9))
    w.sim.reset_stats()

    w.run_pass()

    assert w.sim.stats.without_immutable_id == 0


def _graph(w: World, *, max_pages: int) -> GraphCalendar:
    graph = w.config.graph
    return GraphCalendar(graph.base_url, w.runner.auth(), page_size=3,
                         ca_bundle=w.config.tls.ca_bundle, max_pages=max_pages)
