"""`syncd plan` on the default scenario: every event of Alice explained correctly.

Expected values come from syncd/sim/scenarios/default.yaml and the policies
the simulator's configuration sets (rules per project, trigger category
Track, no default project, the contract's skip defaults).  The clock is
Friday 2026-03-20, so day 0 of the scenario is Monday 2026-03-02.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.runner import PlannedEvent
from syncd.sim import load_scenario

from .world import APOLLO, INTERNAL, ZEPHYR, World

EXPECTED = {
    "Daily Stand-up": {("create", INTERNAL)},
    "Daily Stand-up (Sprint-Review-Vorbereitung)": {("create", INTERNAL)},
    "Apollo Kick-off mit Müller GmbH": {("create", APOLLO)},
    "[APOLLO] Architektur-Review": {("create", APOLLO)},
    "Mittagessen mit Ümit": {("skip", "not_selected")},
    "Zephyr Workshop \u2013 Datenmodell": {("create", ZEPHYR)},
    "Zephyr customer call (West Coast)": {("create", ZEPHYR)},
    "日本語の打ち合わせ 🎌 Zephyr 進捗": {("create", ZEPHYR)},
    "Fokuszeit": {("skip", "free")},
    "Cloud Summit (Konferenz)": {("skip", "all_day")},
    "Apollo Sprint Planning": {("skip", "booked_elsewhere")},
    "Arzttermin": {("skip", "unmapped")},
    "Team-Offsite Planung": {("skip", "unmapped")},
    "🚀 Zephyr launch retro": {("create", ZEPHYR)},
}


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PlannedEvent]]:
    directory = Path(tmp_path_factory.mktemp("plan"))
    w = World(directory, scenario=load_scenario(None))
    try:
        yield w.plan()
    finally:
        w.close()


def _outcome(p: PlannedEvent) -> tuple[str, str | None]:
    decision = p.action.decision
    return p.action.kind, decision.project if decision.book else decision.reason


def test_plan_explains_every_default_scenario_event(
        planned: list[PlannedEvent]) -> None:
    """Each of Alice's events gets the decision the scenario and policies call for."""
    outcomes: dict[str, set[tuple[str, str | None]]] = {}
    for p in planned:
        outcomes.setdefault(p.subject or "", set()).add(_outcome(p))

    assert outcomes == EXPECTED


def test_plan_counts_the_series_occurrences(planned: list[PlannedEvent]) -> None:
    """The stand-up ran on 10 weekdays, one deleted: 9 occurrences, one an exception."""
    standups = [p for p in planned if (p.subject or "").startswith("Daily Stand-up")]

    assert len(standups) == 9


def test_plan_says_why(planned: list[PlannedEvent]) -> None:
    """A create names its rule; a skip names its reason."""
    lunch = next(p for p in planned if p.subject == "Mittagessen mit Ümit")
    review = next(p for p in planned if p.subject == "[APOLLO] Architektur-Review")

    assert lunch.action.why == "not_selected"
    assert review.action.why == "rule rules[1]"
