"""A simulated world for semantics tests: one mailbox, InLoox, a ledger, a clock.

Passes run in-process through the real ``Runner`` (Graph and InLoox clients
over HTTPS against the simulator, the ledger on a temporary SQLite file), the
way ``syncd demo`` wires them.  The clock is fixed and moved by the test.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from syncd.config import load_config
from syncd.ledger import Ledger, Record
from syncd.model import PassResult
from syncd.runner import PlannedEvent, Runner
from syncd.sim import Simulator
from syncd.sim.calendar import Calendar
from syncd.sim.scenario import Scenario, parse_scenario

ALICE = "alice@contoso.example"
APOLLO = "6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10"
ZEPHYR = "2b7e4c91-58a3-4d0f-b6e2-9c1a7f3d5e84"
INTERNAL = "d3a1f5e7-0c2b-4a69-8e4d-71b6c9f2a0d5"
NOW = datetime(2026, 3, 20, 17, 0, tzinfo=UTC)  # a Friday, 18:00 in Berlin

SCENARIO: dict[str, Any] = {
    "name": "semantics",
    "tenant_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "app": {"client_id": "0f4a9d6e-3b2c-4e51-8a7f-6d1e2c3b4a59",
            "client_secret": "sim~semantics-secret-value"},
    "anchor": {"weeks_before_current": 2},
    "lookback": "14d",
    "trigger_categories": ["Track"],
    "settings": {"backdating_days": 30, "page_size": 3},
    "projects": [
        {"id": APOLLO, "name": "Apollo", "number": "P-1", "categories": ["Apollo"],
         "subject_prefix": "[APOLLO]"},
        {"id": ZEPHYR, "name": "Zephyr", "number": "P-2", "categories": ["Zephyr"]},
        {"id": INTERNAL, "name": "Internal", "number": "I-1",
         "categories": ["Internal"]},
    ],
    "users": [
        {"mailbox": ALICE, "name": "Alice", "timezone": "Europe/Berlin",
         "inloox": {"contact_id": "a1c3e5f7-1111-4a2b-9c3d-5e7f9a1b3c5d",
                    "api_key": "ilx_pat_alice_semantics_0000000000"}},
    ],
    "events": [],
}


class Clock:
    """A fixed clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class World:
    """The simulator, a configuration for it and a runner with its own loop."""

    def __init__(self, directory: Path, *, now: datetime = NOW,
                 scenario: Scenario | None = None, **user_overrides: Any) -> None:
        self.clock = Clock(now)
        self.sim = Simulator(scenario or parse_scenario(SCENARIO), clock=self.clock)
        self.sim.start()
        path = self.sim.write_config(directory,
                                     ledger_url=f"sqlite:///{directory / 'l.db'}")
        os.environ.update(self.sim.config_env(directory))
        self.config = _with_user(load_config(path), user_overrides)
        self.ledger = Ledger.open(self.config.ledger.url, clock=self.clock)
        self.loop = asyncio.new_event_loop()
        self.runner = Runner(self.config, self.ledger, clock=self.clock)

    @property
    def calendar(self) -> Calendar:
        return self.sim.calendar(ALICE)

    def run_pass(self) -> PassResult:
        """One pass for Alice, as `syncd once` runs it."""
        return self.loop.run_until_complete(self.runner.run_pass(ALICE))

    def plan(self) -> list[PlannedEvent]:
        """What `syncd plan` would print for Alice."""
        return self.loop.run_until_complete(self.runner.plan(ALICE))

    def entries(self) -> list[dict[str, Any]]:
        """Alice's time entries in InLoox, by start."""
        return sorted(self.sim.inloox_entries(ALICE),
                      key=lambda e: (e["StartDateTime"], e["ProjectId"]))

    def booked(self) -> list[tuple[str, str, str]]:
        """(project, start, end) of every entry, times as InLoox shows them."""
        return [(e["ProjectId"], e["StartDateTime"][:16], e["EndDateTime"][:16])
                for e in self.entries()]

    def record(self, event_id: str) -> Record | None:
        return self.ledger.get(ALICE, event_id)

    def add(self, subject: str, start: datetime, hours: float = 1.0,
            **values: Any) -> str:
        """Add a single event; ``categories`` default to the Apollo project."""
        values.setdefault("categories", ["Apollo"])
        end = start + timedelta(hours=hours)
        return self.calendar.add_event(subject=subject, start=start, end=end,
                                       **values)

    def close(self) -> None:
        self.loop.run_until_complete(self.runner.aclose())
        self.loop.close()
        self.ledger.close()
        self.sim.close()


@contextmanager
def world(directory: Path, **user_overrides: Any) -> Iterator[World]:
    w = World(directory, **user_overrides)
    try:
        yield w
    finally:
        w.close()


def _with_user(config: Any, overrides: dict[str, Any]) -> Any:
    if not overrides:
        return config
    user = config.users[0]
    data = {**user.model_dump(), **overrides}
    data.pop("source_file", None)
    changed = type(user).model_validate(data)
    return config.model_copy(update={"users": (changed,)})


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """An instant in March 2026, UTC."""
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)
