"""Property: after every pass InLoox holds exactly the entries the spec asks for.

Random calendar edits (add, move, cancel, delete, decline, recategorise,
delete an occurrence, time passing) each followed by a pass through the
simulator.  A small oracle here reads the simulated calendar and applies the
spec under the default policies; it does not use ``syncd.rules``.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .world import APOLLO, INTERNAL, ZEPHYR, World

CATEGORIES = [["Apollo"], ["Zephyr"], ["Internal"], ["Zephyr", "Apollo"], ["Track"],
              [], ["Personal"]]
MAPPED = [["Apollo"], ["Zephyr"], ["Internal"]]
SUBJECTS = ["Meeting", "[APOLLO] review"]
DURATIONS = [0, 30, 60, 90, 13 * 60]  # minutes: none, fine, fine, fine, too long
MAX_DURATION = timedelta(hours=12)

index = st.integers(min_value=0, max_value=50)
add = st.tuples(
    st.just("add"),
    st.integers(min_value=-144, max_value=12),  # start, half hours from now
    st.sampled_from(DURATIONS),
    st.sampled_from([0, 1, 2, 3, 0, 1, 4, 5, 6]),  # mostly mapped categories
    st.sampled_from(SUBJECTS),
    st.sampled_from(["busy", "busy", "busy", "free", "tentative"]),
    st.sampled_from(["organizer", "accepted", "accepted", "declined",
                     "tentativelyAccepted"]),
    st.sampled_from(["normal", "private"]),
    st.sampled_from([False, False, False, True]),  # cancelled
    st.integers(min_value=0, max_value=9),  # 0: all-day
)
series = st.tuples(st.just("series"), st.integers(min_value=8, max_value=20),
                   st.sampled_from(range(len(MAPPED))))
edits = st.one_of(
    add, series,
    st.tuples(st.just("move"), index, st.integers(min_value=-8, max_value=8)),
    st.tuples(st.just("cancel"), index),
    st.tuples(st.just("delete"), index),
    st.tuples(st.just("decline"), index),
    st.tuples(st.just("recategorise"), index, st.sampled_from(range(len(CATEGORIES)))),
    st.tuples(st.just("recategorise_series"), index, st.sampled_from(range(3))),
    st.tuples(st.just("delete_occurrence"), index),
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=12)),
)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edits, min_size=1, max_size=6))
def test_inloox_holds_exactly_the_bookable_ended_events(steps: list[Any]) -> None:
    """After every pass: one entry per bookable ended event, on the right project."""
    with tempfile.TemporaryDirectory() as directory:
        w = World(Path(directory))
        try:
            for step in steps:
                _apply(w, step)
                result = w.run_pass()

                assert result.ok, result.error
                assert sorted(w.booked()) == sorted(expected(w))
        finally:
            w.close()


# ---- the oracle -------------------------------------------------------------


def expected(w: World) -> list[tuple[str, str, str]]:
    """(project, start, end) of every event the spec books under the defaults."""
    now = w.clock()
    out = []
    for item in w.calendar.view(now - timedelta(days=13), now + timedelta(days=1)):
        project = _project(w, item)
        start, end = _instant(item["start"]), _instant(item["end"])
        if project is None or not _work(item, start, end, now):
            continue
        out.append((project, f"{start:%Y-%m-%dT%H:%M}", f"{end:%Y-%m-%dT%H:%M}"))
    return out


def _work(item: dict[str, Any], start: datetime, end: datetime, now: datetime) -> bool:
    if item["isCancelled"] or item["isAllDay"] or item["showAs"] == "free":
        return False
    if item["responseStatus"]["response"] == "declined":
        return False
    return timedelta(0) < end - start <= MAX_DURATION and end <= now


def _project(w: World, item: dict[str, Any]) -> str | None:
    own = _mapping(item)
    master_id = item.get("seriesMasterId")
    if own is None or master_id is None:
        return own
    return _mapping(w.calendar.get(master_id)) or own


def _mapping(item: dict[str, Any]) -> str | None:
    """The simulator's rules: Apollo, [APOLLO] subject, Zephyr, Internal."""
    categories = {c.lower() for c in item["categories"]}
    if "apollo" in categories or item["subject"].startswith("[APOLLO]"):
        return APOLLO
    if "zephyr" in categories:
        return ZEPHYR
    if "internal" in categories:
        return INTERNAL
    return None


def _instant(value: dict[str, str]) -> datetime:
    return datetime.fromisoformat(value["dateTime"][:19]).replace(tzinfo=UTC)


# ---- edits ------------------------------------------------------------------


def _apply(w: World, step: tuple[Any, ...]) -> None:
    kind, *args = step
    if kind == "add":
        _add(w, *args)
    elif kind == "series":
        _series(w, *args)
    elif kind == "advance":
        w.clock.advance(timedelta(hours=args[0]))
    elif kind == "recategorise_series":
        _on_series(w, args[0], categories=MAPPED[args[1]])
    elif kind == "delete_occurrence":
        target = _pick(_occurrences(w), args[0])
        if target is not None:
            w.calendar.delete_event(target)
    else:
        _edit(w, kind, *args)


def _add(w: World, half_hours: int, minutes: int, category: int, subject: str,
         show_as: str, response: str, sensitivity: str, cancelled: bool,
         all_day: int) -> None:
    values = {"categories": CATEGORIES[category], "show_as": show_as,
              "response": response, "sensitivity": sensitivity,
              "is_cancelled": cancelled}
    start = w.clock() + timedelta(minutes=30 * half_hours)
    if all_day == 0:
        day = start.date()
        w.calendar.add_event(subject=subject, start=day, end=day + timedelta(days=1),
                             is_all_day=True, **values)
        return
    w.calendar.add_event(subject=subject, start=start,
                         end=start + timedelta(minutes=minutes), **values)


def _series(w: World, hour: int, category: int) -> None:
    first = (w.clock() - timedelta(days=3)).date()
    start = datetime.combine(first, datetime.min.time(), UTC) + timedelta(hours=hour)
    w.calendar.add_series(subject="Daily", start=start, end=start + timedelta(hours=1),
                          days=["monday", "tuesday", "wednesday", "thursday",
                                "friday", "saturday", "sunday"],
                          until=first + timedelta(days=4),
                          categories=MAPPED[category])


def _edit(w: World, kind: str, pick: int, *args: int) -> None:
    target = _pick(_singles(w) + _occurrences(w), pick)
    if target is None:
        return
    if kind == "move":
        item = w.calendar.get(target)
        shift = timedelta(minutes=30 * args[0])
        w.calendar.update_event(target, start=_instant(item["start"]) + shift,
                                end=_instant(item["end"]) + shift)
    elif kind == "cancel":
        w.calendar.update_event(target, is_cancelled=True)
    elif kind == "delete":
        w.calendar.delete_event(target)
    elif kind == "decline":
        w.calendar.update_event(target, response="declined")
    elif kind == "recategorise":
        w.calendar.update_event(target, categories=CATEGORIES[args[0]])


def _on_series(w: World, pick: int, **fields: Any) -> None:
    masters = [e["id"] for e in w.calendar.events() if e["type"] == "seriesMaster"]
    target = _pick(masters, pick)
    if target is not None:
        w.calendar.update_event(target, **fields)


def _singles(w: World) -> list[str]:
    return [e["id"] for e in w.calendar.events()
            if e["type"] == "singleInstance" and not e["isAllDay"]]


def _occurrences(w: World) -> list[str]:
    now = w.clock()
    return [e["id"] for e in w.calendar.view(now - timedelta(days=13),
                                             now + timedelta(days=1))
            if e.get("seriesMasterId")]


def _pick(ids: list[str], pick: int) -> str | None:
    return ids[pick % len(ids)] if ids else None


