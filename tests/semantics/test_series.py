"""Series against the simulator: inheritance, exceptions, deleted occurrences."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

from syncd.engine import Engine, PassContext
from syncd.model import DeltaPage, Event, EventType, Window

from .world import ALICE, APOLLO, ZEPHYR, World, at

WEEK = ["monday", "tuesday", "wednesday", "thursday", "friday"]


def _series(w: World, **values: object) -> str:
    values.setdefault("categories", ["Apollo"])
    return w.calendar.add_series(subject="Apollo daily", start=at(16, 8),
                                 end=at(16, 9), days=WEEK, until=date(2026, 3, 20),
                                 **values)


def _occurrence(w: World, series_id: str, day: int) -> str:
    return next(e["id"] for e in w.calendar.view(at(day, 0), at(day, 23))
                if e.get("seriesMasterId") == series_id)


def test_occurrences_inherit_the_masters_categories(w: World) -> None:
    """Occurrences arrive with ids and times only; the master's category books them."""
    _series(w)

    result = w.run_pass()

    assert result.booked == 5
    assert {b[0] for b in w.booked()} == {APOLLO}


def test_exception_values_override_the_master(w: World) -> None:
    """An occurrence marked free is skipped; its siblings are booked."""
    series_id = _series(w)
    w.calendar.update_event(_occurrence(w, series_id, 18), show_as="free")

    w.run_pass()

    assert [b[1][:10] for b in w.booked()] == [
        "2026-03-16", "2026-03-17", "2026-03-19", "2026-03-20"]


def test_deleted_occurrence_without_removed_is_retracted(w: World) -> None:
    """Deleting one occurrence only changes the series: its entry is retracted."""
    series_id = _series(w)
    w.run_pass()
    w.calendar.delete_occurrence(series_id, at(17, 8))

    result = w.run_pass()

    assert (result.ok, result.retracted) == (True, 1)
    assert [b[1][:10] for b in w.booked()] == [
        "2026-03-16", "2026-03-18", "2026-03-19", "2026-03-20"]


def test_one_recategorised_occurrence_keeps_the_series_project(w: World) -> None:
    """An occurrence edited to Zephyr after booking stays on the series' Apollo."""
    series_id = _series(w)
    w.run_pass()
    w.calendar.update_event(_occurrence(w, series_id, 19), categories=["Zephyr"])

    result = w.run_pass()

    assert result.updated == 0
    assert {b[0] for b in w.booked()} == {APOLLO}


def test_recategorised_series_moves_every_entry(w: World) -> None:
    """The whole series recategorised to Zephyr: every booked entry follows."""
    series_id = _series(w)
    w.run_pass()
    w.calendar.update_event(series_id, categories=["Zephyr"])

    result = w.run_pass()

    assert result.updated == 5
    assert {b[0] for b in w.booked()} == {ZEPHYR}


class _OnlyOccurrences:
    """A calendar source whose round lacks the master (Graph may do that)."""

    def __init__(self, occurrence: Event, master: Event) -> None:
        self.occurrence, self.master = occurrence, master
        self.fetched: list[str] = []

    async def delta_round(self, mailbox: str, window: Window,
                          delta_link: str | None) -> AsyncIterator[DeltaPage]:
        yield DeltaPage(items=[self.occurrence], delta_link="https://link/1")

    async def get_event(self, mailbox: str, event_id: str) -> Event | None:
        self.fetched.append(event_id)
        return self.master if event_id == self.master.id else None

    async def aclose(self) -> None:
        return None


def test_master_is_fetched_when_the_round_lacks_it(w: World) -> None:
    """An occurrence without its master in the round inherits from a fetched master."""
    occurrence = Event(id="occ-1", type=EventType.OCCURRENCE, start=at(16, 8),
                       end=at(16, 9), series_master_id="master-1")
    master = Event(id="master-1", type=EventType.SERIES_MASTER, start=at(16, 8),
                   end=at(16, 9), subject="Apollo daily", categories=("Apollo",),
                   show_as="busy", response="organizer", is_all_day=False)
    source = _OnlyOccurrences(occurrence, master)
    ctx = PassContext(user=w.config.user(ALICE), ledger=w.ledger, source=source,
                      target=w.runner.target(w.config.user(ALICE)), now=w.clock())

    round_, *_ = w.loop.run_until_complete(Engine(w.ledger).prepare(ctx))

    assert source.fetched == ["master-1"]
    assert round_.events["occ-1"].categories == ("Apollo",)
