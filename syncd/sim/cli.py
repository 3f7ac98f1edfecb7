"""``syncd sim``: run the simulator standalone until interrupted."""

from __future__ import annotations

import shlex
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from syncd.sim.scenario import load_scenario
from syncd.sim.simulator import Simulator


def serve(
    scenario_path: str | Path | None,
    port: int = 0,
    config_dir: str | Path | None = None,
    *,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Start the simulator, write a config, print how to use it, block until
    SIGINT/SIGTERM (or ``stop`` is set); returns the exit status 0."""
    import sys

    stream = out or sys.stdout
    done = stop or threading.Event()
    sim = Simulator(load_scenario(scenario_path))
    sim.port = port
    directory = (
        Path(config_dir)
        if config_dir
        else Path(tempfile.mkdtemp(prefix="syncd-sim-config-"))
    )
    with sim:
        config = sim.write_config(directory)
        _print_usage(sim, config, stream)
        previous = _install_handlers(done) if stop is None else {}
        try:
            while not done.wait(0.5):
                pass
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
    print("simulator stopped", file=stream, flush=True)
    return 0


def _print_usage(sim: Simulator, config: Path, stream: TextIO) -> None:
    lines = [
        f"syncd simulator running (scenario {sim.scenario.name})",
        f"  identity authority  {sim.authority}",
        f"  graph base url      {sim.graph_url}",
        f"  inloox base url     {sim.inloox_url}",
        f"  control api         {sim.control_url}",
        f"  CA bundle           {config.parent / 'ca.pem'}",
        f"  config              {config}",
        f"  users               {', '.join(sim.users)}",
        "",
        "In another shell:",
    ]
    for name, value in sim.config_env(config.parent).items():
        lines.append(f"  export {name}={shlex.quote(value)}")
    lines += [f"  syncd once -c {shlex.quote(str(config))}", "", "Ctrl-C stops it."]
    print("\n".join(lines), file=stream, flush=True)


def _install_handlers(done: threading.Event) -> dict[int, Any]:
    def finish(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous: dict[int, Any] = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        previous[number] = signal.getsignal(number)
        signal.signal(number, finish)
    return previous
