"""``syncd run`` as systemd runs it: a real process against the simulator."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.sim import Simulator

from .conftest import WAIT, Daemon, edit_config, process_env, syncd

pytestmark = pytest.mark.slow

StartDaemon = Callable[..., Daemon]
EX_CONFIG = 78


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus exposition text as {(sample name, labels): value}."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    """One sample's value, ``None`` when it is not exported."""
    return found.get((name, frozenset(labels.items())))


def test_systemd_sees_ready_watchdog_status_and_stopping(
    config: Path, start_daemon: StartDaemon
) -> None:
    """READY once scheduling, WATCHDOG pings, STATUS per pass, STOPPING; exit 0."""
    daemon = start_daemon(config)

    daemon.wait_notify("READY=1")
    daemon.wait_notify("WATCHDOG=1")
    daemon.wait_log("pass_finished")
    daemon.wait_until(
        lambda: any("last pass" in s for s in daemon.notified("STATUS")),
        "STATUS with the last pass",
    )
    code = daemon.stop()

    assert code == 0
    assert daemon.messages[0].startswith("READY=1\n")
    assert daemon.messages[-1] == "STOPPING=1\nSTATUS=stopping"
    assert daemon.notified("STOPPING") == ["STOPPING=1"]
    assert daemon.logged("service_stopped")
    assert len(daemon.notified("WATCHDOG")) >= 2


def test_health_and_metrics_answer_during_a_run(
    sim: Simulator, config: Path, start_daemon: StartDaemon
) -> None:
    """/livez, /readyz and /metrics answer; /metrics has every counter of issue 5."""
    sim.faults.throttle_graph(1, retry_after=0)
    daemon = start_daemon(config)
    for mailbox in sim.users:
        daemon.wait_log("pass_finished", count=2, user=mailbox, ok=True)

    livez = httpx.get(daemon.health_url("/livez"), timeout=WAIT)
    readyz = httpx.get(daemon.health_url("/readyz"), timeout=WAIT)
    metrics = httpx.get(daemon.health_url("/metrics"), timeout=WAIT)
    found = samples(metrics.text)
    code = daemon.stop()

    assert (livez.status_code, livez.text) == (200, "ok\n")
    assert (readyz.status_code, readyz.text) == (200, "ok\n")
    assert metrics.status_code == 200
    assert value(found, "syncd_events_total", outcome="booked", reason="") == len(
        sim.inloox_entries()
    )
    assert value(found, "syncd_events_total", outcome="skipped", reason="all_day")
    assert value(found, "syncd_graph_requests_total", status="200")
    assert value(found, "syncd_graph_requests_total", status="429") == 1
    assert value(found, "syncd_throttled_total", service="graph") == 1
    assert value(found, "syncd_inloox_requests_total", operation="create", status="201")
    assert value(found, "syncd_pass_duration_seconds_count", result="ok")
    for mailbox in sim.users:
        assert value(found, "syncd_last_success_timestamp_seconds", user=mailbox)
    assert value(found, "syncd_users", state="active") == len(sim.users)
    assert value(found, "syncd_users", state="auth_required") == 0
    assert value(found, "syncd_build_info", version="0.1.0") == 1
    assert code == 0


def test_sighup_with_broken_config_keeps_the_old_one(
    config: Path, start_daemon: StartDaemon
) -> None:
    """A broken syncd.yaml is refused and passes go on; a fixed one is taken."""
    good = config.read_text()
    daemon = start_daemon(config)
    daemon.wait_notify("READY=1")
    daemon.wait_log("pass_finished")

    config.write_text(good + "schedule: {interval: soon}\nnot_a_key: 1\n")
    daemon.signal(signal.SIGHUP)
    refused = daemon.wait_log("config_reload_refused")
    passes = len(daemon.logged("pass_finished"))
    daemon.wait_log("pass_finished", count=passes + 3)

    config.write_text(good)
    edit_config(config, schedule={"interval": "2s", "jitter": "0s"})
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_log("config_reloaded")
    code = daemon.stop()

    assert any("not_a_key" in problem for problem in refused["problems"])
    assert reloaded["interval"] == 2.0
    assert reloaded["users"] == 3
    assert len(daemon.notified("RELOADING")) == 2
    assert daemon.notified("READY").count("READY=1") == 3
    assert code == 0


def test_second_daemon_on_sqlite_is_refused_until_the_first_stops(
    config: Path, start_daemon: StartDaemon
) -> None:
    """One daemon per SQLite ledger; stopping releases the lock for the next."""
    first = start_daemon(config)
    first.wait_notify("READY=1")

    second = start_daemon(config)
    second_code = second.process.wait(WAIT)
    first_code = first.stop()
    third = start_daemon(config)
    third.wait_notify("READY=1")

    assert second_code == 1
    assert "ledger" in second.stderr().lower()
    assert second.notified("READY") == []
    assert first_code == 0
    assert third.stop() == 0


def test_bad_config_exits_78_without_ready(
    sim: Simulator, config: Path, start_daemon: StartDaemon
) -> None:
    """`syncd run` with an invalid syncd.yaml exits 78 and never says READY."""
    edit_config(config, schedule={"interval": "soon"})

    daemon = start_daemon(config)
    code = daemon.process.wait(WAIT)

    assert code == EX_CONFIG
    assert daemon.notified("READY") == []
    assert "schedule.interval" in daemon.stderr()


def test_check_config_as_exec_reload_rejects_the_broken_file(
    sim: Simulator, config: Path
) -> None:
    """ExecReload's check-config exits 78 on the file a SIGHUP would refuse."""
    edit_config(config, not_a_key=1)

    result = subprocess.run(
        syncd("check-config", "-c", str(config)),
        env=process_env(sim, config),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )

    assert result.returncode == EX_CONFIG
    assert "not_a_key" in result.stderr


def test_busy_metrics_port_exits_1_with_a_log_line(
    config: Path, start_daemon: StartDaemon
) -> None:
    """A metrics.listen already in use is named in the log; exit 1, no READY."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        edit_config(config, metrics={"listen": listen})

        daemon = start_daemon(config)
        code = daemon.process.wait(WAIT)

    assert code == 1
    assert daemon.logged("health_listen_failed", listen=listen)
    assert daemon.notified("READY") == []
