"""`syncd sim` standalone, and `syncd once -c <its config>` pointed at it."""

from __future__ import annotations

import re
import shlex
import signal
import ssl
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.sim import load_scenario
from tests.e2e.support import Process, run_syncd
from tests.integration.default_scenario import USERS, expected_entries

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class StandaloneSim:
    """What `syncd sim` printed: where it is and how to point syncd at it."""

    process: Process
    control_url: str
    ca_bundle: Path
    config: Path
    env: dict[str, str]

    def control(self, path: str) -> Any:
        trust = ssl.create_default_context(cafile=str(self.ca_bundle))
        response = httpx.get(f"{self.control_url}/{path}", verify=trust, timeout=10)
        response.raise_for_status()
        return response.json()


def _printed(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{pattern!r} not in the output of syncd sim:\n{text}"
    return match[1]


@pytest.fixture
def standalone(tmp_path: Path,
               syncd_process: Callable[..., Process]) -> Iterator[StandaloneSim]:
    """`syncd sim` running in a subprocess, and what it printed."""
    process = syncd_process("sim", "--config-dir", str(tmp_path / "sim"), env={})
    process.wait_for(lambda: "Ctrl-C stops it." in process.stdout, 20,
                     "syncd sim ready")
    out = process.stdout
    exports = re.findall(r"^\s+export (\S+?)=(.*)$", out, re.MULTILINE)
    yield StandaloneSim(
        process=process,
        control_url=_printed(r"^\s+control api\s+(\S+)$", out),
        ca_bundle=Path(_printed(r"^\s+CA bundle\s+(\S+)$", out)),
        config=Path(_printed(r"^\s+config\s+(\S+)$", out)),
        env={name: shlex.split(value)[0] for name, value in exports},
    )
    process.stop(signal.SIGINT)


def _entries(sim: StandaloneSim, mailbox: str) -> Counter[tuple[str, str, str, int]]:
    return Counter(
        (e["DisplayName"], e["ProjectId"], e["StartDateTime"], e["DurationMinutes"])
        for e in sim.control(f"inloox/entries?mailbox={mailbox}")
    )


def test_once_with_the_printed_config_books_the_scenario_once(
        standalone: StandaloneSim) -> None:
    """once with the config `syncd sim` printed books all; a second writes nothing."""
    anchor = load_scenario(None).anchor_date(datetime.now(UTC).date())
    config = str(standalone.config)

    first = run_syncd("once", "-c", config, env=standalone.env)
    writes = standalone.control("stats")["inloox_writes"]
    second = run_syncd("once", "-c", config, env=standalone.env)

    assert (first.code, second.code) == (0, 0), f"{first}\n{second}"
    assert writes == 35
    assert standalone.control("stats")["inloox_writes"] == writes
    for user in USERS:
        assert _entries(standalone, user) == expected_entries(user, anchor), user


def test_sim_stops_cleanly_on_sigterm(standalone: StandaloneSim) -> None:
    """`syncd sim` exits 0 on SIGTERM and says so."""
    code = standalone.process.stop(signal.SIGTERM)

    assert code == 0, standalone.process
    assert "simulator stopped" in standalone.process.stdout
