"""`syncd run` as a process against the simulator: bookings, probes, SIGTERM."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from syncd.sim import Simulator
from tests.e2e.support import (
    Process,
    SimConfig,
    event_names,
    free_port,
    log_events,
    run_syncd,
)
from tests.integration.default_scenario import USERS, expected_entries

pytestmark = pytest.mark.slow

BOOKINGS_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def _fast_schedule(sim_config: SimConfig, **extra: object) -> None:
    """A pass per user every second, no jitter (the smallest the config allows)."""
    sim_config.edit({"schedule": {"interval": "1s", "jitter": "0s"}, **extra})


def _passes_per_user(process: Process) -> Counter[str]:
    return Counter(str(e.get("user")) for e in log_events(process.stderr)
                   if e.get("event") == "pass_finished")


def _entries(sim: Simulator, mailbox: str) -> Counter[tuple[str, str, str, int]]:
    return Counter(
        (e["DisplayName"], e["ProjectId"], e["StartDateTime"], e["DurationMinutes"])
        for e in sim.inloox_entries(mailbox)
    )


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


def test_run_books_serves_probes_and_stops_cleanly_on_sigterm(
        sim: Simulator, sim_config: SimConfig,
        syncd_process: Callable[..., Process]) -> None:
    """`syncd run` books each meeting once, answers its probes, exits 0 on SIGTERM."""
    port = free_port()
    _fast_schedule(sim_config, metrics={"listen": f"127.0.0.1:{port}"})
    anchor = sim.scenario.anchor_date(sim.clock().date())
    daemon = syncd_process("run", "-c", str(sim_config.path), env=sim_config.env)

    daemon.wait_for(lambda: len(sim.inloox_entries()) >= 35, BOOKINGS_TIMEOUT,
                    "35 bookings")
    daemon.wait_for(lambda: min(_passes_per_user(daemon)[u] for u in USERS) >= 2,
                    BOOKINGS_TIMEOUT, "a second pass of every user")
    metrics, livez, readyz = (_get(port, p) for p in ("/metrics", "/livez", "/readyz"))
    code = daemon.stop(signal.SIGTERM, STOP_TIMEOUT)

    assert code == 0, daemon
    for user in USERS:
        assert _entries(sim, user) == expected_entries(user, anchor), user
    assert sim.stats.inloox_creates == 35
    assert (metrics.status_code, livez.status_code, readyz.status_code) == (200,) * 3
    assert 'syncd_events_total{outcome="booked",reason=""} 35.0' in metrics.text
    assert "syncd_last_success_timestamp_seconds" in metrics.text
    names = event_names(daemon.stderr)
    assert "service_started" in names
    assert names[-1] == "service_stopped", daemon


def test_second_daemon_on_the_same_sqlite_ledger_refuses(
        sim_config: SimConfig, syncd_process: Callable[..., Process]) -> None:
    """A second `syncd run` on a SQLite ledger in use exits 1 saying why."""
    first = syncd_process("run", "-c", str(sim_config.path), env=sim_config.env)
    first.wait_for(lambda: "service_started" in event_names(first.stderr), 20,
                   "the first daemon started")

    second = run_syncd("run", "-c", str(sim_config.path), env=sim_config.env,
                       timeout=30)

    assert second.code == 1, second
    assert "another syncd is already running on this ledger" in second.stderr
    assert f"(pid {first.pid})" in second.stderr
    assert "Traceback" not in second.output
    assert first.popen.poll() is None, first
    assert first.stop(signal.SIGTERM, STOP_TIMEOUT) == 0, first
