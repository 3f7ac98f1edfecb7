"""No secret and no calendar body in the log of a real debug run."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from syncd.sim import Simulator, default_scenario_path
from syncd.sim.scenario import parse_scenario

from .conftest import WAIT, edit_config, process_env, syncd

pytestmark = pytest.mark.slow

BODY_MARK = "confidential-agenda-7Hq2"
"""Text only the calendar bodies contain (never a subject, category or name)."""


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """The default scenario with a private body on every event."""
    raw = yaml.safe_load(default_scenario_path().read_text(encoding="utf-8"))
    for index, event in enumerate(raw["events"]):
        event["body"] = f"<p>{BODY_MARK} #{index}: salaries, layoffs</p>"
    simulator = Simulator(parse_scenario(raw, name="bodies"))
    simulator.start()
    yield simulator
    simulator.close()


def once(sim: Simulator, config: Path) -> subprocess.CompletedProcess[str]:
    """``syncd once`` with the simulator's environment."""
    return subprocess.run(
        syncd("once", "-c", str(config)),
        env=process_env(sim, config),
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=4 * WAIT,
        check=False,
    )


def issued_tokens(sim: Simulator) -> list[str]:
    """Every access token the simulated identity platform handed out."""
    return list(sim.identity._access)


def test_debug_run_logs_no_secret_token_or_body(sim: Simulator, tmp_path: Path) -> None:
    """Debug passes with throttles, 502s, drops and a rejected secret leak nothing."""
    config = sim.write_config(tmp_path)
    edit_config(config, log={"level": "debug", "format": "json"})
    sim.faults.throttle_graph(1, retry_after=0)
    sim.faults.throttle_inloox(1, retry_after=0)
    sim.faults.bad_gateway_after_commit(1)
    sim.faults.drop_after_commit(1)

    booked = once(sim, config)
    tokens = issued_tokens(sim)
    sim.identity.expire_access_tokens()
    sim.faults.reject_client_secret()
    rejected = once(sim, config)
    output = booked.stderr + rejected.stderr
    secrets = [sim.client_secret, *(sim.inloox_key(m) for m in sim.users)]

    assert booked.returncode == 1, booked.stderr  # two creates left in doubt
    assert rejected.returncode == 1
    assert tokens
    assert sim.inloox_entries()
    for secret in secrets + tokens:
        assert secret not in output
    for token in tokens:
        assert token.rpartition(".")[2] not in output
    assert BODY_MARK not in output
    assert "salaries" not in output


def test_every_line_of_a_debug_run_is_one_json_record(
    sim: Simulator, tmp_path: Path
) -> None:
    """Library records (httpx, msal, SQLAlchemy, APScheduler) share the format."""
    config = sim.write_config(tmp_path)
    edit_config(config, log={"level": "debug", "format": "json"})
    sim.faults.throttle_graph(1, retry_after=0)

    result = once(sim, config)
    lines = [json.loads(line) for line in result.stderr.splitlines()]

    assert result.returncode == 0, result.stderr
    assert {line["level"] for line in lines} >= {"debug", "info", "warning"}
    for line in lines:
        assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    summaries = [line for line in lines if line["event"] == "pass_finished"]
    assert {line["user"] for line in summaries} == set(sim.users)
    assert all(line["pass_id"] for line in summaries)
