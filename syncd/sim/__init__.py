"""Local simulators of the Microsoft identity platform, Graph calendar and InLoox.

One HTTPS listener on 127.0.0.1 serves all three, with a CA made by trustme.
``syncd demo`` and ``syncd sim`` run on it, and so do the integration tests::

    with Simulator(load_scenario(None)) as sim:
        config = sim.write_config(tmp_path)
        env = sim.config_env(tmp_path)
"""

from syncd.sim.cli import serve
from syncd.sim.scenario import (
    Scenario,
    ScenarioError,
    default_scenario_path,
    load_scenario,
)
from syncd.sim.simulator import Simulator

__all__ = [
    "Scenario",
    "ScenarioError",
    "Simulator",
    "default_scenario_path",
    "load_scenario",
    "serve",
]
