"""``syncd retry``: permanent failures wait for a human, then book once."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.sim import Simulator
from tests.crash.support import (
    ROOT,
    bookable_starts,
    entry_starts,
    once,
    scenario,
    states,
    write_config,
)

MAILBOX = "u000@contoso.example"


def allow_backdating(sim: Simulator, days: int) -> None:
    """InLoox's administrator changes how far back time may be booked."""
    settings = dataclasses.replace(sim.scenario.settings, backdating_days=days)
    sim.scenario = dataclasses.replace(sim.scenario, settings=settings)


def retry(sim: Simulator, config: Path, command: str = "retry") -> str:
    env = {**os.environ, **sim.config_env(config.parent), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "syncd.cli", command, "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.mark.slow
def test_permanent_failures_wait_for_syncd_retry(tmp_path: Path) -> None:
    """Refused by InLoox (too old): tried once; after ``syncd retry``, booked once."""
    with Simulator(scenario(1, 3, backdating_days=1)) as sim:
        url = f"sqlite:///{tmp_path}/ledger.db"
        config = write_config(sim, tmp_path, url)

        refused = once(sim, config, "refused")
        tried = sim.stats.count("inloox", "POST", "create_from_event")
        ignored = once(sim, config, "ignored")
        untried = sim.stats.count("inloox", "POST", "create_from_event") == tried
        shown = retry(sim, config, "status")
        allow_backdating(sim, 30)
        said = retry(sim, config)
        booked = once(sim, config, "booked")

        assert (refused, ignored, booked) == (1, 0, 0)
        assert tried == 3 and untried
        assert said.startswith("3 failed booking(s)")
        failures = [ln for ln in shown.splitlines() if "  failed_permanent  " in ln]
        assert len(failures) == 3, shown
        message = "InLoox refused the request: Time can be booked at most 1 days back."
        assert all(message in line and "[TimeEntryTooOld]" in line
                   for line in failures), shown
        assert states(url) == {"booked": 3}
        assert entry_starts(sim, MAILBOX) == bookable_starts(sim, MAILBOX)
    sim.close()


@pytest.mark.slow
def test_retry_resumes_a_user_paused_by_an_auth_failure(tmp_path: Path) -> None:
    """Access was fixed on Microsoft's side (nothing in the configuration
    changed): ``syncd retry`` resumes the user and the next pass books."""
    with Simulator(scenario(1, 3)) as sim:
        url = f"sqlite:///{tmp_path}/ledger.db"
        config = write_config(sim, tmp_path, url)
        sim.faults.reject_client_secret(True)
        once(sim, config, "rejected")
        sim.faults.reject_client_secret(False)
        still = once(sim, config, "still paused")

        said = retry(sim, config)
        booked = once(sim, config, "booked")

        assert still == 1
        assert f"{MAILBOX}: was auth_required; resumed" in said
        assert booked == 0
        assert entry_starts(sim, MAILBOX) == bookable_starts(sim, MAILBOX)
    sim.close()


def test_retry_of_an_unknown_event_says_so(tmp_path: Path) -> None:
    """``syncd retry --event`` with an id the ledger does not hold: exit 2."""
    with Simulator(scenario(1, 1)) as sim:
        config = write_config(sim, tmp_path, f"sqlite:///{tmp_path}/ledger.db")
        env = {**os.environ, **sim.config_env(tmp_path), "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "syncd.cli", "retry", "-c", str(config),
             "--event", "AAMk-no-such-event"],
            capture_output=True, text=True, env=env, timeout=60, check=False)

        assert done.returncode == 2
        assert "no booking of event 'AAMk-no-such-event'" in done.stderr
    sim.close()
