"""`syncd once` at its edges: the pass deadline, and a bad simulator scenario."""

from __future__ import annotations

from pathlib import Path

from syncd.sim import Simulator
from tests.e2e.support import run_syncd, write_sim_config


def test_once_cuts_a_pass_at_pass_timeout(sim: Simulator, tmp_path: Path) -> None:
    """A pass slower than pass_timeout is stopped, named, and exits 1."""
    config = write_sim_config(sim, tmp_path)
    config.edit({"pass_timeout": "1s"})
    sim.faults.latency["graph"] = 3.0

    result = run_syncd("once", "-c", str(config.path), "--user",
                       "alice@contoso.example", env=config.env)

    assert result.code == 1
    assert "alice@contoso.example: timeout" in result.stderr
    assert result.seconds < 10


def test_sim_refuses_a_bad_scenario_with_exit_78(tmp_path: Path) -> None:
    """A scenario file that is not a scenario is named, without a traceback."""
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("users: 5\n", encoding="utf-8")

    result = run_syncd("sim", "--scenario", str(scenario))

    assert result.code == 78
    assert str(scenario) in result.stderr
    assert "Traceback" not in result.stderr
