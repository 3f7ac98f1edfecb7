"""`syncd plan` (a dry run that writes nothing) and `syncd status` after a pass.

Each group runs its commands once, against its own simulator, and the tests
read what they printed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load_config
from syncd.ledger import Ledger
from syncd.sim import Simulator, load_scenario
from tests.e2e.support import (
    CliResult,
    SimConfig,
    run_passes,
    run_syncd,
    write_sim_config,
)
from tests.integration.default_scenario import (
    BOB,
    BOOKED_COUNT,
    BOOKINGS,
    CHIYO,
    SKIPS,
    USERS,
    expected_skip_reasons,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Ran:
    """Commands run against one simulator, and what the simulator saw."""

    results: dict[str, CliResult]
    anchor: date
    started: datetime
    ledger_before: str
    ledger_after: str
    inloox_writes: int
    inloox_entries: int
    passes: dict[str, Any]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pass_in_process(config: SimConfig) -> dict[str, Any]:
    """A pass for every user, in this process, on the configuration's ledger."""
    loaded = load_config(config.path, env={**os.environ, **config.env})
    ledger = Ledger.open(config.ledger_url)
    try:
        return run_passes(loaded, ledger)
    finally:
        ledger.close()


def _run_against_sim(directory: Path, commands: dict[str, tuple[str, ...]],
                     *, after_a_pass: bool) -> Ran:
    """Run each command (``-c <config>`` appended) against a fresh simulator.

    Before the commands, the ledger is created empty, or by a first pass.
    """
    with Simulator(load_scenario(None)) as sim:
        config = write_sim_config(sim, directory)
        started = datetime.now(UTC)
        passes = _pass_in_process(config) if after_a_pass else {}
        if not after_a_pass:
            Ledger.open(config.ledger_url).close()
        before = _digest(config.ledger_path)
        results = {name: run_syncd(*args, "-c", str(config.path), env=config.env)
                   for name, args in commands.items()}
        ran = Ran(results, sim.scenario.anchor_date(sim.clock().date()), started,
                  before, _digest(config.ledger_path), sim.stats.inloox_writes,
                  len(sim.inloox_entries()), passes)
    sim.close()
    return ran


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    """`plan --user bob` and `plan --json` on a ledger that knows nothing yet."""
    yield _run_against_sim(
        tmp_path_factory.mktemp("plan"),
        {"bob": ("plan", "--user", BOB), "json": ("plan", "--json")},
        after_a_pass=False)


@pytest.fixture(scope="module")
def statused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    """`status` and `status --json` after a pass of every user."""
    yield _run_against_sim(
        tmp_path_factory.mktemp("status"),
        {"text": ("status",), "json": ("status", "--json")}, after_a_pass=True)


def _section(stdout: str, mailbox: str) -> list[str]:
    """The lines `plan` or `status` printed under ``== mailbox``."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"== {mailbox}"))
    rest = lines[start + 1:]
    end = next((i for i, line in enumerate(rest) if line.startswith("== ")), len(rest))
    return rest[:end]


def test_plan_prints_every_event_of_a_user_with_its_decision(planned: Ran) -> None:
    """plan --user lists each of Bob's eight events: book on its project, or skip."""
    result = planned.results["bob"]

    assert result.code == 0, result
    lines = [line for line in _section(result.stdout, BOB) if line[3:5].isdigit()]
    assert len(lines) == 8, result
    for booking in BOOKINGS[BOB]:
        line = next(line for line in lines if booking.subject in line)
        assert " create " in line and f"book on {booking.project}" in line, line
    for subject, reason in SKIPS[BOB].items():
        line = next(line for line in lines if subject in line)
        assert " skip " in line and f"skip ({reason})" in line, line


def test_plan_json_gives_every_decision(planned: Ran) -> None:
    """plan --json parses and holds each user's bookings and skips with reasons."""
    result = planned.results["json"]

    assert result.code == 0, result
    plans = json.loads(result.stdout)
    assert sorted(plans) == sorted(USERS)
    for user in USERS:
        creates = Counter((p["subject"], p["project"]) for p in plans[user]
                          if p["action"] == "create")
        skips = Counter(p["reason"] for p in plans[user] if p["action"] == "skip")
        assert creates == Counter((b.subject, b.project) for b in BOOKINGS[user])
        assert skips == expected_skip_reasons(
            user, planned.anchor, planned.started), user
        assert all(p["book"] == (p["action"] == "create") for p in plans[user])


def test_plan_writes_nothing(planned: Ran) -> None:
    """plan leaves the ledger file unchanged, byte for byte, and writes no entry."""
    codes = [r.code for r in planned.results.values()]

    assert codes == [0, 0], "\n".join(map(str, planned.results.values()))
    assert planned.ledger_after == planned.ledger_before
    assert (planned.inloox_writes, planned.inloox_entries) == (0, 0)


def test_status_after_a_pass_counts_states_per_user(statused: Ran) -> None:
    """status prints, per user, the booked and skipped counts and the skip reasons."""
    result = statused.results["text"]

    assert all(p.ok for p in statused.passes.values())
    assert result.code == 0, result
    for user in USERS:
        section = "\n".join(_section(result.stdout, user))
        reasons = expected_skip_reasons(user, statused.anchor, statused.started)
        assert f"booked={BOOKED_COUNT[user]}," in section, section
        assert f"skipped={reasons.total()}" in section, section
        assert "last success: never" not in section
    bob = "\n".join(_section(result.stdout, BOB))
    assert "skipped: all_day=1, cancelled=1, declined=1" in bob


def test_status_json_after_a_pass(statused: Ran) -> None:
    """status --json gives per user the counts by state and by skip reason."""
    result = statused.results["json"]

    assert result.code == 0, result
    rows = {row["user"]: row for row in json.loads(result.stdout)}
    assert sorted(rows) == sorted(USERS)
    for user in USERS:
        row = rows[user]
        reasons = expected_skip_reasons(user, statused.anchor, statused.started)
        assert row["status"] == "active"
        assert row["last_success_at"] is not None
        assert {k: v for k, v in row["counts"].items() if v} == {
            "booked": BOOKED_COUNT[user], **({"skipped": reasons.total()}
                                             if reasons else {})}
        assert row["skip_reasons"] == dict(reasons)
        assert row["recent_failures"] == []
    assert rows[CHIYO]["skip_reasons"] == {}
