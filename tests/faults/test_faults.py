"""Throttling and outages (issue 4), each against the simulator.

The runner and ledger are the real ones; the simulator misbehaves on
request through its fault knobs.  Expected values come from the scenario:
two users with three Apollo meetings each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from syncd.runner import build_auth
from syncd.sim import Simulator
from syncd.sim.config import GRAPH_SECRET_ENV
from tests.crash.support import (
    bookable_starts,
    entry_starts,
    scenario,
    start,
    wait_for,
    write_config,
)
from tests.faults.support import Bench, add_meeting
from tests.pg import Cluster, _bindir, postgres_server  # noqa: F401

MAILBOX, OTHER = "u000@contoso.example", "u001@contoso.example"
MEETINGS = 3

Make = Callable[..., Bench]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(scenario(2, MEETINGS)).start()
    yield simulator
    simulator.close()


@pytest.fixture
def make(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Make]:
    """Build a bench with configuration overrides (closed after the test)."""
    benches: list[Bench] = []

    def build(**overrides: Any) -> Bench:
        benches.append(Bench(sim, tmp_path, monkeypatch, **overrides))
        return benches[-1]

    yield build
    for bench in benches:
        bench.close()


def booked_once(sim: Simulator, mailbox: str) -> bool:
    """InLoox holds exactly one entry per bookable meeting of the mailbox."""
    return entry_starts(sim, mailbox) == bookable_starts(sim, mailbox)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


# ---- limits and Retry-After -------------------------------------------------


def test_requests_in_flight_stay_within_the_limits(sim: Simulator, make: Make) -> None:
    """Two users at once: InLoox sees one request at a time, Graph at most 4."""
    bench = make(**{"http.inloox_concurrency": 1, "http.max_concurrency": 2})
    sim.faults.latency.update(graph=0.02, inloox=0.05)

    results = bench.run(MAILBOX, OTHER)

    assert [r.ok for r in results] == [True, True]
    assert sim.stats.inloox_max_concurrent == 1
    assert max(sim.stats.max_concurrent.values()) <= 4
    assert sim.stats.throttled == 0
    assert booked_once(sim, MAILBOX) and booked_once(sim, OTHER)


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [(0.3, 0.3, 0.3), (2, 2, 2), ("date", 0.5, 2.0), (None, 0.0, 0.01)],
    ids=["fractional", "seconds", "http-date", "absent"],
)
def test_retry_after_is_honoured_in_every_form(
    sim: Simulator, make: Make, retry_after: Any, low: float, high: float
) -> None:
    """A 429 waits what Retry-After says; without it, a short jittered backoff."""
    bench = make()
    sim.faults.throttle_graph(1, retry_after=retry_after, mailbox=MAILBOX)

    with capture_logs() as logs:
        [result] = bench.run(MAILBOX)

    [retry] = events(logs, "http_retry")
    assert low <= retry["delay"] <= high
    assert result.ok and booked_once(sim, MAILBOX)


def test_a_mailbox_that_keeps_being_throttled_is_paused_others_go_on(
    sim: Simulator, make: Make
) -> None:
    """Throttled through every retry: paused a minute, no calls; the other books."""
    bench = make()
    sim.faults.throttle_graph(10, retry_after=0.01, mailbox=MAILBOX)

    throttled, other = bench.run(MAILBOX, OTHER)
    calls = sim.stats.count("graph")
    [again] = bench.run(MAILBOX)

    state = bench.ledger.user_state(MAILBOX)
    assert throttled.error_kind == "throttled"
    assert other.ok and booked_once(sim, OTHER)
    assert again.error_kind == "paused" and sim.stats.count("graph") == calls
    assert state.status == "paused"
    assert state.paused_until >= datetime.now(UTC) + timedelta(seconds=55)


# ---- timeouts and deadlines -------------------------------------------------


def test_a_create_that_times_out_is_looked_up_not_sent_again(
    sim: Simulator, make: Make
) -> None:
    """InLoox answers too late: in doubt, then found by lookup; one entry each."""
    bench = make(**{"http.timeout": "200ms"})
    sim.faults.latency["inloox"] = 1.0

    [late] = bench.run(MAILBOX)
    sim.faults.latency["inloox"] = 0.0
    wait_for(lambda: len(sim.inloox_entries(MAILBOX)) == MEETINGS, 10, "commits")
    [after] = bench.run(MAILBOX)

    assert late.failed == MEETINGS and late.booked == 0
    assert after.ok and after.booked == MEETINGS
    assert sim.stats.inloox_creates == MEETINGS
    assert booked_once(sim, MAILBOX)


@pytest.mark.slow
def test_a_hung_pass_hits_its_deadline_and_later_passes_run(
    sim: Simulator, tmp_path: Path
) -> None:
    """``syncd run``: a pass stuck on Graph is cut at pass_timeout; the next books."""
    config = write_config(
        sim,
        tmp_path,
        f"sqlite:///{tmp_path}/ledger.db",
        pass_timeout="1s",
        **{"http.timeout": "10s"},
    )
    sim.faults.latency["graph"] = 5.0
    daemon = start(sim, config, "run", "daemon")
    try:
        wait_for(lambda: daemon.events("pass_timed_out"), 30, "a timed-out pass")
        sim.faults.latency["graph"] = 0.0
        wait_for(lambda: booked_once(sim, MAILBOX) and booked_once(sim, OTHER), 30)
    finally:
        code = daemon.stop()

    assert code == 0


# ---- Graph 5xx in the middle of a round ------------------------------------


def test_graph_failing_mid_round_retries_the_same_page(
    sim: Simulator, make: Make
) -> None:
    """A 504 on the second page: that page is asked again and the pass succeeds."""
    bench = make()
    sim.faults.fail_graph(504, count=1)

    with capture_logs() as logs:
        [result] = bench.run(MAILBOX)

    [retry] = events(logs, "http_retry")
    assert retry["status"] == 504
    assert sim.stats.count("graph", status=504) == 1
    assert result.ok and booked_once(sim, MAILBOX)


def test_graph_failing_mid_round_gives_up_keeping_the_delta_link(
    sim: Simulator, make: Make
) -> None:
    """504 on every retry of a page: the pass fails, the old delta link stays."""
    bench = make()
    bench.run(MAILBOX)
    link = bench.ledger.cursor(MAILBOX).delta_link
    for hour in (8, 9, 10):
        add_meeting(sim, MAILBOX, days_ago=1, hour=hour)
    sim.faults.fail_graph(504, count=2)

    [failed] = bench.run(MAILBOX)
    kept = bench.ledger.cursor(MAILBOX).delta_link
    [later] = bench.run(MAILBOX)

    assert failed.error_kind == "transient" and failed.booked == 0
    assert kept == link
    assert later.ok and later.booked == 3
    assert booked_once(sim, MAILBOX)


# ---- auth -------------------------------------------------------------------


def test_a_rejected_client_secret_pauses_the_user_until_it_changes(
    sim: Simulator, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One clear log line, no calls at all, and back to work after a new secret."""
    monkeypatch.setenv(GRAPH_SECRET_ENV, "rotated-away")
    bench = make()

    with capture_logs() as logs:
        [rejected] = bench.run(MAILBOX)
        calls = sim.stats.count()
        [waiting] = bench.run(MAILBOX)
    idle = sim.stats.count() == calls
    monkeypatch.setenv(GRAPH_SECRET_ENV, sim.client_secret)
    bench.reload()
    [resumed] = bench.run(MAILBOX)

    assert rejected.error_kind == "auth" and waiting.error_kind == "auth_required"
    assert idle
    assert len(events(logs, "user_auth_required")) == 1
    assert resumed.ok and booked_once(sim, MAILBOX)
    assert bench.ledger.user_state(MAILBOX).status == "active"


def test_a_corrected_client_id_resumes_the_user(
    sim: Simulator, make: Make
) -> None:
    """A typo in graph.client_id pauses the user; the corrected file resumes
    it on the next reload, although no secret changed."""
    wrong = "00000000-0000-4000-8000-000000000000"
    bench = make(**{"graph.client_id": wrong})

    [rejected] = bench.run(MAILBOX)
    bench.path.write_text(bench.path.read_text().replace(wrong, sim.client_id))
    bench.reload()
    [resumed] = bench.run(MAILBOX)

    assert rejected.error_kind == "auth"
    assert resumed.ok and booked_once(sim, MAILBOX)


def test_a_401_with_a_cached_token_refreshes_once_and_retries(
    sim: Simulator, make: Make
) -> None:
    """Graph refuses the cached token: one new token, one retry, pass ok."""
    bench = make()
    bench.run(MAILBOX)
    tokens = sim.stats.count("identity", "POST")
    sim.identity.expire_access_tokens()
    add_meeting(sim, MAILBOX, days_ago=1, hour=9)

    [result] = bench.run(MAILBOX)

    assert sim.stats.count("graph", status=401) == 1
    assert sim.stats.count("identity", "POST") == tokens + 1
    assert result.ok and result.booked == 1 and booked_once(sim, MAILBOX)


def device_code(make: Make, cache: Path) -> Bench:
    return make(
        **{
            "graph.auth": "device_code",
            "graph.token_cache": str(cache),
            "graph.client_secret": None,
        }
    )


def test_a_rejected_refresh_token_waits_for_login(
    sim: Simulator, make: Make, tmp_path: Path
) -> None:
    """Refresh token revoked: auth_required, no calls; ``syncd login`` resumes."""
    cache = tmp_path / "tokens.json"
    bench = device_code(make, cache)
    build_auth(bench.config()).login(lambda _: None, mailbox=MAILBOX)
    bench.run(MAILBOX)
    sim.faults.revoke_refresh_tokens(MAILBOX)
    sim.identity.expire_access_tokens()
    add_meeting(sim, MAILBOX, days_ago=1, hour=9)

    [rejected] = bench.run(MAILBOX)
    calls = sim.stats.count()
    [waiting] = bench.run(MAILBOX)
    idle = sim.stats.count() == calls
    build_auth(bench.config()).login(lambda _: None, mailbox=MAILBOX)
    [resumed] = bench.run(MAILBOX)

    assert rejected.error_kind == "auth" and waiting.error_kind == "auth_required"
    assert idle
    assert resumed.ok and resumed.booked == 1 and booked_once(sim, MAILBOX)


def test_a_corrupt_token_cache_is_moved_aside_not_crash_looped(
    sim: Simulator, make: Make, tmp_path: Path
) -> None:
    """The unreadable cache is renamed; the user waits for a login, calmly."""
    cache = tmp_path / "tokens.json"
    cache.write_text('{"AccessToken": ', encoding="utf-8")
    bench = device_code(make, cache)

    [first] = bench.run(MAILBOX)
    [second] = bench.run(MAILBOX)

    assert first.error_kind == "auth" and second.error_kind == "auth_required"
    assert len(list(tmp_path.glob("tokens.json.corrupt-*"))) == 1
    assert not cache.exists()


# ---- the database -----------------------------------------------------------


class RestartableCluster(Cluster):
    """A private PostgreSQL that the test can take down and bring back."""

    def halt(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl",
            "-D",
            str(self.root / "data"),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "start",
        )


@pytest.fixture
def cluster(postgres_server: str) -> Iterator[RestartableCluster]:  # noqa: F811
    """A PostgreSQL server of this test's own (the shared one must stay up)."""
    own = RestartableCluster(_bindir())
    own.start()
    yield own
    own.stop()


@pytest.mark.postgres
def test_a_database_outage_fails_the_pass_and_the_next_one_succeeds(
    sim: Simulator, make: Make, cluster: RestartableCluster
) -> None:
    """PostgreSQL down: the pass fails cleanly; back up: the next pass books."""
    bench = make(ledger_url=cluster.url)
    [before] = bench.run(MAILBOX)
    cluster.halt()
    add_meeting(sim, MAILBOX, days_ago=1, hour=9)

    [down] = bench.run(MAILBOX)
    cluster.resume()
    [up] = bench.run(MAILBOX)

    assert before.ok
    assert down.error_kind == "ledger" and not down.ok
    assert up.ok and up.booked == 1 and booked_once(sim, MAILBOX)
