"""Shared fixtures: a running simulator, a ready configuration for it, the CLI.

``sim`` is a started :class:`syncd.sim.Simulator` on the default scenario;
``sim_config`` writes a configuration for it into a temporary directory and
applies the environment it needs; ``syncd`` runs the command line as a
subprocess (``python -m syncd.cli``) with that environment, and
``syncd_process`` starts one that keeps running (``syncd run``, ``syncd sim``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncd.sim import Simulator, load_scenario
from tests.e2e.support import (
    CLI_TIMEOUT,
    INHERITED_SYNCD_VARS,
    CliResult,
    Process,
    SimConfig,
    run_syncd,
    start_syncd,
    write_sim_config,
)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator of the default scenario, serving until the test ends."""
    simulator = Simulator(load_scenario(None))
    simulator.start()
    yield simulator
    simulator.close()


@pytest.fixture
def sim_config(sim: Simulator, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> SimConfig:
    """The simulator's ready configuration in tmp_path, its env applied."""
    config = write_sim_config(sim, tmp_path)
    for name in INHERITED_SYNCD_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in config.env.items():
        monkeypatch.setenv(name, value)
    return config


@pytest.fixture
def syncd(sim_config: SimConfig) -> Callable[..., CliResult]:
    """Run a syncd command with the simulator's environment."""

    def run(*args: str, timeout: float = CLI_TIMEOUT) -> CliResult:
        return run_syncd(*args, env=sim_config.env, timeout=timeout)

    return run


@pytest.fixture
def syncd_process() -> Iterator[Callable[..., Process]]:
    """Start syncd subprocesses that keep running; any left over are killed."""
    started: list[Process] = []

    def start(*args: str, env: dict[str, str]) -> Process:
        process = start_syncd(*args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
