"""The simulator in a process of its own: ``python -m bench.simproc``.

Reads a JSON job on stdin (``shapes``, ``config_dir``), starts the simulator
with the generated scenario, writes a syncd configuration for it, prints one
line ``BENCH-SIM {json}`` (addresses, CA, config, environment) and serves
until stdin is closed.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.scenario import Shape, scenario

READY = "BENCH-SIM "


def main() -> int:
    from syncd.logs import configure_logging
    from syncd.sim import Simulator
    from syncd.sim.scenario import parse_scenario

    configure_logging(level="warning", fmt="json")
    job = json.loads(sys.stdin.readline())
    shapes = [Shape(**s) for s in job["shapes"]]
    raw = scenario(shapes, datetime.now(UTC).date())
    sim = Simulator(parse_scenario(raw, name="bench"))
    with sim:
        directory = Path(job["config_dir"])
        config = sim.write_config(directory, ledger_url=job.get("ledger_url"))
        ready = {
            "base_url": sim.base_url,
            "control_url": sim.control_url,
            "ca_path": str(sim.ca_path),
            "config": str(config),
            "env": sim.config_env(directory),
            "users": sim.users,
        }
        print(READY + json.dumps(ready), flush=True)
        sys.stdin.read()  # until the orchestrator closes the pipe
    sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
