"""The service: scheduling, deadlines, signals, reload, sd_notify, health."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from syncd.errors import ConfigError, Problem
from syncd.metrics import REGISTRY
from syncd.model import PassResult
from syncd.notify import Notifier
from syncd.service import (
    Service,
    ServiceConfig,
    first_run_delay,
    record_pass,
    service_config_from,
)

TICK = timedelta(seconds=0.2)
ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
DURATION_COUNT = "syncd_pass_duration_seconds_count"


class FakeRunner:
    """A PassRunner seam: records passes, can be slow or hang once per user."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        hang_once: frozenset[str] = frozenset(),
        fail: frozenset[str] = frozenset(),
    ) -> None:
        self.delay = delay
        self.hang_once = set(hang_once)
        self.fail = fail
        self.started: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self.active: Counter[str] = Counter()
        self.max_active: Counter[str] = Counter()
        self.max_total = 0
        self.closed = False

    async def run_pass(self, mailbox: str) -> PassResult:
        self.started.append(mailbox)
        self.active[mailbox] += 1
        self.max_active[mailbox] = max(self.max_active[mailbox], self.active[mailbox])
        self.max_total = max(self.max_total, sum(self.active.values()))
        try:
            return await self._work(mailbox)
        except asyncio.CancelledError:
            self.cancelled.append(mailbox)
            raise
        finally:
            self.active[mailbox] -= 1

    async def _work(self, mailbox: str) -> PassResult:
        if mailbox in self.hang_once:
            self.hang_once.discard(mailbox)
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay)
        if mailbox in self.fail:
            raise RuntimeError("runner broke its contract")
        self.finished.append(mailbox)
        return PassResult(
            user=mailbox, ok=True, seen=2, booked=1, skipped={"all_day": 1}
        )

    async def aclose(self) -> None:
        self.closed = True


def _config(*users: str, **overrides: object) -> ServiceConfig:
    settings: dict[str, object] = {
        "interval": TICK,
        "jitter": timedelta(0),
        "pass_timeout": timedelta(seconds=2),
    }
    settings.update(overrides)
    return ServiceConfig(users=users, **settings)  # type: ignore[arg-type]


def _service(
    config: ServiceConfig, runner: FakeRunner, **kwargs: object
) -> Service[ServiceConfig]:
    kwargs.setdefault("notifier", Notifier(None))
    kwargs.setdefault("install_signal_handlers", False)
    return Service(lambda: config, lambda _: runner, **kwargs)  # type: ignore[arg-type]


async def _until(predicate: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def _run(
    service: Service[ServiceConfig], scenario: Callable[[], Awaitable[None]]
) -> None:
    """Run the service, play the scenario once it is ready, then stop it."""

    async def main() -> None:
        task = asyncio.create_task(service.run())
        await asyncio.wait_for(service.ready.wait(), 2)
        try:
            await scenario()
        finally:
            service.stop()
            await asyncio.wait_for(task, 3)

    asyncio.run(main())


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield path, sock
    sock.close()


def _received(sock: socket.socket) -> list[str]:
    lines: list[str] = []
    while True:
        try:
            lines.extend(sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return lines


def test_systemd_sees_ready_watchdog_status_and_stopping(
    notify_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a fake NOTIFY_SOCKET: READY, WATCHDOG, STATUS, then STOPPING on SIGTERM."""
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    runner = FakeRunner()
    service = Service(lambda: _config(ALICE), lambda _: runner)

    async def main() -> None:
        task = asyncio.create_task(service.run())
        await _until(lambda: runner.finished)
        await asyncio.sleep(0.15)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 3)

    asyncio.run(main())

    lines = _received(sock)
    assert "READY=1" in lines
    assert "WATCHDOG=1" in lines
    assert f"STATUS=1 users; last pass {ALICE}: ok, 1 booked, 0 failed" in lines
    assert lines[-2:] == ["STOPPING=1", "STATUS=stopping"]
    assert lines.index("READY=1") < lines.index("WATCHDOG=1")
    assert runner.closed


def test_sighup_with_broken_config_keeps_the_old_one() -> None:
    """SIGHUP with a loader raising ConfigError logs the refusal, keeps users."""
    current: list[ServiceConfig | ConfigError] = [_config(ALICE)]
    runner = FakeRunner()

    def load() -> ServiceConfig:
        if isinstance(current[0], ConfigError):
            raise current[0]
        return current[0]

    service = Service(load, lambda _: runner, notifier=Notifier(None))

    async def scenario() -> None:
        problem = Problem("syncd.yaml", 3, "schedule.interval", "not a duration")
        current[0] = ConfigError([problem])
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: any(e["event"] == "config_reload_refused" for e in logs))
        passes = len(runner.finished)
        await _until(lambda: len(runner.finished) > passes)
        assert service.scheduled_users() == {ALICE}

    with capture_logs() as logs:
        _run(service, scenario)

    [refused] = [e for e in logs if e["event"] == "config_reload_refused"]
    assert refused["problems"] == ["syncd.yaml:3: schedule.interval: not a duration"]
    assert refused["log_level"] == "error"
    assert service.config == _config(ALICE)
    assert set(runner.finished) == {ALICE}


def test_reload_adds_and_removes_users() -> None:
    """A new valid config schedules new users, drops gone ones, closes old runner."""
    configs = [_config(ALICE), _config(BOB, "carol@contoso.example")]
    runners: list[FakeRunner] = []

    def factory(_: ServiceConfig) -> FakeRunner:
        runners.append(FakeRunner())
        return runners[-1]

    service = Service(
        lambda: configs[0],
        factory,
        notifier=Notifier(None),
        install_signal_handlers=False,
    )

    async def scenario() -> None:
        await _until(lambda: runners[0].finished)
        configs.pop(0)
        assert await service.reload()
        await _until(lambda: {BOB, "carol@contoso.example"} <= set(runners[1].finished))
        assert service.scheduled_users() == {BOB, "carol@contoso.example"}

    with capture_logs() as logs:
        _run(service, scenario)

    [reloaded] = [e for e in logs if e["event"] == "config_reloaded"]
    assert reloaded["added"] == [BOB, "carol@contoso.example"]
    assert reloaded["removed"] == [ALICE]
    assert ALICE not in runners[1].started
    assert runners[0].closed


def test_reload_with_new_interval_reschedules_kept_users() -> None:
    """A shorter interval on reload applies to users already scheduled."""
    configs = [_config(ALICE, interval=timedelta(hours=1)), _config(ALICE)]
    runner = FakeRunner()
    service = Service(
        lambda: configs[0],
        lambda _: runner,
        notifier=Notifier(None),
        install_signal_handlers=False,
    )

    async def scenario() -> None:
        await asyncio.sleep(0.3)
        assert runner.started == []
        configs.pop(0)
        await service.reload()
        await _until(lambda: runner.finished, timeout=1.5)

    _run(service, scenario)

    assert runner.finished[0] == ALICE


def test_reload_notifies_reloading_then_ready(
    notify_socket: tuple[str, socket.socket],
) -> None:
    """Around a reload systemd sees RELOADING=1 (with MONOTONIC_USEC), READY=1."""
    path, sock = notify_socket
    service = _service(
        _config(ALICE, interval=timedelta(seconds=5)),
        FakeRunner(),
        notifier=Notifier(path),
    )

    async def scenario() -> None:
        _received(sock)
        await service.reload()

    _run(service, scenario)

    lines = _received(sock)
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert lines[2] == "READY=1"


def test_hung_pass_times_out_and_next_pass_runs() -> None:
    """pass_timeout cancels a hung pass; the user's next pass still runs."""
    runner = FakeRunner(hang_once=frozenset({ALICE}))
    config = _config(ALICE, pass_timeout=timedelta(seconds=0.3))
    timeouts = _sample(DURATION_COUNT, result="timeout")

    async def scenario() -> None:
        await _until(lambda: runner.finished)

    with capture_logs(processors=[merge_contextvars]) as logs:
        _run(_service(config, runner), scenario)

    assert runner.cancelled == [ALICE]
    assert runner.finished[0] == ALICE
    assert _sample(DURATION_COUNT, result="timeout") == timeouts + 1
    [timed_out] = [e for e in logs if e["event"] == "pass_timed_out"]
    assert timed_out["user"] == ALICE
    assert timed_out["pass_id"]


def test_slow_pass_never_runs_twice_at_once() -> None:
    """With a pass slower than the interval, one user has one pass at a time."""
    runner = FakeRunner(delay=0.5)
    skipped = _sample("syncd_passes_skipped_total", reason="still_running")

    async def scenario() -> None:
        await _until(lambda: len(runner.finished) >= 2)

    _run(_service(_config(ALICE), runner), scenario)

    assert runner.max_active[ALICE] == 1
    assert _sample("syncd_passes_skipped_total", reason="still_running") > skipped


def test_global_cap_on_parallel_passes() -> None:
    """max_parallel_passes bounds the passes running at once across users."""
    users = [f"user{i}@contoso.example" for i in range(4)]
    runner = FakeRunner(delay=0.2)

    async def scenario() -> None:
        await _until(lambda: set(runner.finished) == set(users))

    _run(_service(_config(*users, max_parallel_passes=2), runner), scenario)

    assert runner.max_total == 2


def test_broken_runner_does_not_stop_the_service() -> None:
    """A runner that raises is recorded as an internal failure; passes go on."""
    runner = FakeRunner(fail=frozenset({ALICE}))
    failures = _sample(DURATION_COUNT, result="internal")

    async def scenario() -> None:
        await _until(lambda: BOB in runner.finished)
        await _until(lambda: runner.started.count(ALICE) >= 2)

    _run(_service(_config(ALICE, BOB), runner), scenario)

    assert _sample(DURATION_COUNT, result="internal") >= failures + 2


def test_stop_lets_a_short_pass_finish() -> None:
    """On stop, a pass that ends within the grace period completes."""
    runner = FakeRunner(delay=0.4)
    config = _config(ALICE, stop_grace=timedelta(seconds=2))

    async def scenario() -> None:
        await _until(lambda: runner.started)

    _run(_service(config, runner), scenario)

    assert runner.finished == [ALICE]
    assert runner.cancelled == []
    assert runner.closed


def test_stop_cancels_a_pass_past_the_grace_period() -> None:
    """On stop, a pass still running after the grace period is cancelled."""
    runner = FakeRunner(delay=30)
    config = _config(ALICE, stop_grace=timedelta(seconds=0.2))

    async def scenario() -> None:
        await _until(lambda: runner.started)

    with capture_logs() as logs:
        _run(_service(config, runner), scenario)

    assert runner.cancelled == [ALICE]
    [stopped] = [e for e in logs if e["event"] == "service_stopped"]
    assert stopped["cancelled_passes"] == 1


def test_bad_config_at_start_raises_before_anything_runs() -> None:
    """The first load's ConfigError reaches the caller (syncd run exits 78)."""
    problem = Problem("syncd.yaml", 1, "ledger", "missing")

    def load() -> ServiceConfig:
        raise ConfigError([problem])

    runner = FakeRunner()
    service = Service(
        load, lambda _: runner, notifier=Notifier(None), install_signal_handlers=False
    )

    with pytest.raises(ConfigError):
        asyncio.run(service.run())
    assert runner.started == []


def test_health_endpoints_answer() -> None:
    """/livez, /readyz, /metrics answer; /readyz follows the ready check."""
    ledger_up = [True]

    def ping() -> None:
        if not ledger_up[0]:
            raise RuntimeError("ledger down at postgresql://syncd:pw@db/ledger")

    runner = FakeRunner()
    config = _config(ALICE, metrics_listen="127.0.0.1:0")
    service = _service(config, runner, ready_check=ping)
    answers: dict[str, httpx.Response] = {}

    async def scenario() -> None:
        await _until(lambda: runner.finished)
        address = service.health_address
        assert address is not None
        base = f"http://127.0.0.1:{address[1]}"
        async with httpx.AsyncClient(base_url=base) as client:
            for path in ("/livez", "/readyz", "/metrics", "/nope"):
                answers[path] = await client.get(path)
            ledger_up[0] = False
            answers["/readyz down"] = await client.get("/readyz")
            answers["/livez down"] = await client.get("/livez")

    _run(service, scenario)

    assert answers["/livez"].status_code == 200
    assert answers["/readyz"].status_code == 200
    assert answers["/nope"].status_code == 404
    assert answers["/readyz down"].status_code == 503
    assert "ledger down" in answers["/readyz down"].text
    assert "pw" not in answers["/readyz down"].text
    assert answers["/livez down"].status_code == 200
    metrics = answers["/metrics"]
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert f'syncd_last_success_timestamp_seconds{{user="{ALICE}"}}' in metrics.text
    assert "syncd_build_info" in metrics.text


def test_first_runs_spread_over_the_interval() -> None:
    """Users start at stable, different points inside the first interval."""
    interval = timedelta(minutes=5)
    mailboxes = [f"user{i}@contoso.example" for i in range(1000)]

    delays = [first_run_delay(m, interval) for m in mailboxes]

    assert all(timedelta(0) <= d < interval for d in delays)
    assert first_run_delay("User0@Contoso.example", interval) == delays[0]
    tenths = Counter(int(d / interval * 10) for d in delays)
    assert all(50 <= tenths[i] <= 150 for i in range(10))


def test_few_users_start_within_a_second_each() -> None:
    """One user starts within a second; three within three seconds."""
    interval = timedelta(minutes=5)

    one = first_run_delay("alice@contoso.example", interval, users=1)
    three = [first_run_delay(f"u{i}@contoso.example", interval, users=3)
             for i in range(3)]

    assert one < timedelta(seconds=1)
    assert all(d < timedelta(seconds=3) for d in three)


def test_record_pass_feeds_the_metrics() -> None:
    """A pass result becomes event counters, a duration and a last-success time."""
    user = "metrics@contoso.example"
    booked = _sample("syncd_events_total", outcome="booked", reason="")
    declined = _sample("syncd_events_total", outcome="skipped", reason="declined")
    result = PassResult(user=user, ok=True, booked=2, skipped={"declined": 3})

    record_pass(result, duration=0.5, now=1_700_000_000.0)

    assert _sample("syncd_events_total", outcome="booked", reason="") == booked + 2
    assert (
        _sample("syncd_events_total", outcome="skipped", reason="declined")
        == declined + 3
    )
    assert _sample("syncd_last_success_timestamp_seconds", user=user) == 1_700_000_000.0


def test_failed_pass_keeps_the_last_success_time() -> None:
    """An auth failure is counted by kind and leaves last success alone."""
    user = "paused@contoso.example"
    record_pass(PassResult(user=user, ok=True), duration=0.1, now=100.0)
    auth = _sample(DURATION_COUNT, result="auth")

    record_pass(
        PassResult(user=user, ok=False, error_kind="auth"), duration=0.1, now=200.0
    )

    assert _sample("syncd_last_success_timestamp_seconds", user=user) == 100.0
    assert _sample(DURATION_COUNT, result="auth") == auth + 1


def test_a_pass_another_replica_serves_is_a_skip_not_a_success() -> None:
    """lease_elsewhere (ok, nothing done here) neither refreshes the user's
    last-success time nor counts as an ok pass: it is counted as skipped."""
    user = "elsewhere@contoso.example"
    record_pass(PassResult(user=user, ok=True), duration=0.1, now=100.0)
    ok = _sample(DURATION_COUNT, result="ok")
    skipped = _sample("syncd_passes_skipped_total", reason="lease_elsewhere") or 0

    record_pass(PassResult(user=user, ok=True, error_kind="lease_elsewhere"),
                duration=0.1, now=200.0)

    assert _sample("syncd_last_success_timestamp_seconds", user=user) == 100.0
    assert _sample(DURATION_COUNT, result="ok") == ok
    assert _sample("syncd_passes_skipped_total", reason="lease_elsewhere") == (
        skipped + 1)


def test_service_config_from_the_real_config_shape() -> None:
    """The builder reads schedule, metrics, pass_timeout and users' mailboxes."""
    config = SimpleNamespace(
        schedule=SimpleNamespace(
            interval=timedelta(minutes=5),
            jitter=timedelta(seconds=30),
            max_parallel_passes=12,
        ),
        metrics=SimpleNamespace(listen="127.0.0.1:9464"),
        pass_timeout=timedelta(minutes=10),
        users=(SimpleNamespace(mailbox=ALICE), SimpleNamespace(mailbox=BOB)),
    )

    view = service_config_from(config)

    assert view == ServiceConfig(
        users=(ALICE, BOB),
        interval=timedelta(minutes=5),
        jitter=timedelta(seconds=30),
        pass_timeout=timedelta(minutes=10),
        metrics_listen="127.0.0.1:9464",
        max_parallel_passes=12,
        stop_grace=timedelta(seconds=20),
    )


def test_users_gauge_counts_users_by_ledger_state() -> None:
    """syncd_users follows the states the ledger reports, refreshed per pass."""
    states = {ALICE: "auth_required"}
    asked: list[list[str]] = []

    def user_states(mailboxes: list[str]) -> dict[str, str]:
        asked.append(list(mailboxes))
        return {m: states[m] for m in mailboxes if m in states}

    runner = FakeRunner()
    service = _service(_config(ALICE, BOB), runner, user_states=user_states)

    async def scenario() -> None:
        await _until(lambda: _sample("syncd_users", state="auth_required") == 1)
        assert _sample("syncd_users", state="active") == 1
        states[ALICE] = "active"
        await _until(lambda: _sample("syncd_users", state="active") == 2)
        assert _sample("syncd_users", state="auth_required") == 0
        assert _sample("syncd_users", state="paused") == 0

    _run(service, scenario)
    assert sorted(asked[0]) == [ALICE, BOB]
    assert [ALICE] in asked


def test_reload_to_a_busy_metrics_port_keeps_serving_passes() -> None:
    """A reload whose metrics.listen is taken logs it; the passes go on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        configs = [_config(ALICE), _config(ALICE, metrics_listen=busy)]
        runner = FakeRunner()
        service = Service(
            lambda: configs[0],
            lambda _: runner,
            notifier=Notifier(None),
            install_signal_handlers=False,
        )

        async def scenario() -> None:
            configs.pop(0)
            with capture_logs() as logs:
                taken_over = await service.reload()
            passes = len(runner.finished)
            await _until(lambda: len(runner.finished) > passes)
            assert taken_over
            assert service.health_address is None
            assert [
                e["listen"] for e in logs if e["event"] == "health_listen_failed"
            ] == [busy]

        _run(service, scenario)


class BlockingRunner(FakeRunner):
    """A runner whose first pass blocks the event loop itself (a hung loop)."""

    def __init__(self, block: float) -> None:
        super().__init__()
        self.block = block

    async def _work(self, mailbox: str) -> PassResult:
        if self.block:
            block, self.block = self.block, 0.0
            time.sleep(block)  # deliberately not awaited: nothing else runs
        return await super()._work(mailbox)


def test_watchdog_pings_stop_while_the_loop_hangs(
    notify_socket: tuple[str, socket.socket],
) -> None:
    """WATCHDOG=1 comes from the loop: a blocked loop sends none, so systemd trips."""
    path, sock = notify_socket
    runner = BlockingRunner(block=1.0)
    notifier = Notifier(path, watchdog_usec=200_000)
    service = _service(_config(ALICE), runner, notifier=notifier)
    pings: list[float] = []
    done = threading.Event()
    reader = threading.Thread(target=_timed, args=(sock, pings, done))
    reader.start()

    async def scenario() -> None:
        await _until(lambda: runner.finished)
        await asyncio.sleep(0.3)

    try:
        _run(service, scenario)
    finally:
        done.set()
        reader.join()

    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert max(gaps) >= 0.9
    assert min(gaps) < 0.2


def _timed(sock: socket.socket, pings: list[float], done: threading.Event) -> None:
    """In a thread of its own: note when each WATCHDOG=1 datagram arrives."""
    sock.settimeout(0.05)
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            if b"WATCHDOG=1" in sock.recv(4096):
                pings.append(time.monotonic())
