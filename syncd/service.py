"""The daemon: one scheduled pass per user, signals, sd_notify, health.

:class:`Service` knows nothing about Graph or InLoox.  It loads a
configuration, asks a factory for a :class:`PassRunner`, schedules one
APScheduler interval job per user, and turns each :class:`PassResult` into
metrics and a systemd status line.  SIGTERM/SIGINT stop it cleanly, SIGHUP
swaps in a new configuration -- or refuses it and keeps the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

import structlog
from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_MAX_INSTANCES,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from syncd import __version__
from syncd.errors import ConfigError
from syncd.health import HealthListenError, HealthServer
from syncd.logs import bind_pass
from syncd.metrics import (
    BUILD_INFO,
    CONFIG_RELOADS,
    EVENTS,
    LAST_SUCCESS,
    PASS_DURATION,
    PASSES_SKIPPED,
    USERS,
)
from syncd.model import PassResult
from syncd.notify import Notifier
from syncd.redact import redact_text

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL = timedelta(minutes=5)
DEFAULT_JITTER = timedelta(seconds=30)
DEFAULT_PASS_TIMEOUT = timedelta(minutes=10)
DEFAULT_MAX_PARALLEL_PASSES = 16
"""``schedule.max_parallel_passes`` when not configured (the config's default)."""
DEFAULT_STOP_GRACE = timedelta(seconds=20)
"""How long running passes may finish after SIGTERM before they are cancelled."""

HEARTBEAT_INTERVAL = 1.0
"""Seconds between loop heartbeats (shorter if systemd's watchdog asks)."""

READY_CHECK_TIMEOUT = 2.0

LIVENESS_LIMIT = 45.0
"""Seconds without a heartbeat before ``/livez`` fails.  Ledger calls run in
the event loop and may legitimately hold it for a while (PostgreSQL
statements time out after 30 s, SQLite waits up to 5 s for a lock), so only a
loop stuck well beyond that counts as dead."""

USER_STATES = ("active", "auth_required", "paused")
"""The states of ``syncd_users`` that are always exported (0 when empty)."""

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_JOB_PREFIX = "pass:"


class PassRunner(Protocol):
    """Runs one user's pass; never raises for that user's own failure.

    A runner may also have ``async def aclose()``: the service calls it once
    the runner is replaced by a reload (after its last pass) or at shutdown.
    """

    async def run_pass(self, mailbox: str) -> PassResult: ...


UserStates = Callable[[Sequence[str]], Mapping[str, str]]
"""Each given mailbox's state (``active``, ``auth_required``, ``paused``).

May block (it reads the ledger): the service calls it in a thread.  A
mailbox it leaves out counts as ``active``.
"""


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The part of the configuration the service itself acts on."""

    users: tuple[str, ...]
    interval: timedelta = DEFAULT_INTERVAL
    jitter: timedelta = DEFAULT_JITTER
    pass_timeout: timedelta = DEFAULT_PASS_TIMEOUT
    metrics_listen: str | None = None
    max_parallel_passes: int = DEFAULT_MAX_PARALLEL_PASSES
    stop_grace: timedelta = DEFAULT_STOP_GRACE


def service_config_from(config: Any) -> ServiceConfig:
    """Build the service's view of a loaded :class:`syncd.config.Config`.

    A :class:`ServiceConfig` is returned as it is.  ``schedule.stop_grace``
    (and ``schedule.max_parallel_passes`` of a configuration object without
    it) fall back to the defaults.
    """
    if isinstance(config, ServiceConfig):
        return config

    schedule = config.schedule
    metrics = getattr(config, "metrics", None)
    return ServiceConfig(
        users=tuple(user.mailbox for user in config.users),
        interval=_duration(schedule.interval),
        jitter=_duration(schedule.jitter),
        pass_timeout=_duration(config.pass_timeout),
        metrics_listen=getattr(metrics, "listen", None),
        max_parallel_passes=getattr(
            schedule, "max_parallel_passes", DEFAULT_MAX_PARALLEL_PASSES
        ),
        stop_grace=_duration(getattr(schedule, "stop_grace", DEFAULT_STOP_GRACE)),
    )


def _duration(value: timedelta | float) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=float(value))


FIRST_RUN_SPREAD_PER_USER = timedelta(seconds=1)
"""First passes start about this far apart on average (at most one interval
in all): one user starts at once, a thousand spread over the interval."""


def first_run_delay(mailbox: str, interval: timedelta,
                    users: int | None = None) -> timedelta:
    """Where in the first interval this user's first pass falls.

    A stable hash of the mailbox spreads users evenly, so a thousand users do
    not all start at once, and a restart keeps each user's slot.  With few
    users the spread shrinks to about a second per user, so a consultant's
    first pass runs right after start instead of up to an interval later.
    """
    spread = interval if users is None else min(
        interval, FIRST_RUN_SPREAD_PER_USER * users)
    digest = hashlib.sha256(mailbox.lower().encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return spread * fraction


NOT_SERVED = frozenset({"lease_elsewhere", "still_running"})
"""Passes this process did not run: another replica serves the user, or this
user's previous pass has not ended.  They are skips, not successes."""


def record_pass(result: PassResult, *, duration: float, now: float) -> None:
    """Turn one pass result into metrics (``syncd once`` may call this too)."""
    if result.error_kind in NOT_SERVED:
        PASSES_SKIPPED.labels(reason=result.error_kind).inc()
        return
    label = "ok" if result.ok else (result.error_kind or "failed")
    PASS_DURATION.labels(result=label).observe(duration)

    counts = {
        "booked": result.booked,
        "updated": result.updated,
        "retracted": result.retracted,
        "unchanged": result.unchanged,
        "failed": result.failed,
    }
    for outcome, count in counts.items():
        if count:
            EVENTS.labels(outcome=outcome, reason="").inc(count)
    for reason, count in result.skipped.items():
        if count:
            EVENTS.labels(outcome="skipped", reason=reason).inc(count)

    if result.ok:
        LAST_SUCCESS.labels(user=result.user).set(now)


def pass_status(result: PassResult, users: int) -> str:
    """One line for systemd's STATUS: how many users, how the last pass went."""
    if result.ok:
        outcome = f"ok, {result.booked} booked, {result.failed} failed"
    else:
        outcome = f"failed ({result.error_kind or 'unknown'})"
    return f"{users} users; last pass {result.user}: {outcome}"


@dataclass(slots=True)
class _RunnerSlot:
    """A runner and the passes still using it (closed after a reload)."""

    runner: PassRunner
    active: int = 0
    retired: bool = False
    closed: bool = field(default=False)


C = TypeVar("C")


class Service(Generic[C]):
    """Schedules passes for every configured user until told to stop."""

    def __init__(
        self,
        loader: Callable[[], C],
        runner_factory: Callable[[C], PassRunner | Awaitable[PassRunner]],
        *,
        view: Callable[[C], ServiceConfig] = service_config_from,
        ready_check: Callable[[], object] | None = None,
        user_states: UserStates | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        install_signal_handlers: bool = True,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self._loader = loader
        self._runner_factory = runner_factory
        self._view_of = view
        self._ready_check = ready_check
        self._user_states = user_states
        self._states: dict[str, str] = {}
        self._published_states: set[str] = set(USER_STATES)
        self._notifier = Notifier.from_env() if notifier is None else notifier
        self._clock = clock
        self._install_signal_handlers = install_signal_handlers
        self._heartbeat_interval = heartbeat_interval

        self.loaded: C | None = None
        self.config: ServiceConfig | None = None
        self._slot: _RunnerSlot | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._health: HealthServer | None = None
        self._limit = asyncio.Semaphore(DEFAULT_MAX_PARALLEL_PASSES)
        self._running: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        self._stop_requested = asyncio.Event()
        self._stop_reason = "requested"
        self._stopping = False
        self._last_beat = 0.0
        self._status = "starting"
        self.ready = asyncio.Event()
        """Set once the scheduler runs (and READY=1 was sent)."""

    # ---- public ----------------------------------------------------------------

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT or :meth:`stop`; a bad config raises first.

        The initial load's :class:`ConfigError` propagates before anything
        starts, so ``syncd run`` can exit 78 with the problems listed.
        """
        loaded, config = await self._load()
        runner = await self._build_runner(loaded)
        self.loaded, self.config = loaded, config
        self._slot = _RunnerSlot(runner)
        self._limit = asyncio.Semaphore(config.max_parallel_passes)

        self._install_signals()
        try:
            await self._start(config)
            await self._stop_requested.wait()
        finally:
            await self._shutdown()

    def stop(self, reason: str = "requested") -> None:
        """Ask the service to stop; :meth:`run` returns after a clean stop."""
        self._stop_reason = reason
        self._stop_requested.set()

    def request_reload(self) -> None:
        """Reload in the background (what SIGHUP does)."""
        if self._stopping:
            return

        self._spawn(self.reload())

    async def reload(self) -> bool:
        """Load the configuration again and swap it in whole, or refuse it.

        Returns whether the new configuration was taken.
        """
        async with self._reload_lock:
            self._notifier.reloading()
            try:
                return await self._reload()
            finally:
                self._notifier.ready(self._status)

    @property
    def health_address(self) -> tuple[str, int] | None:
        """The health server's bound ``(host, port)``, when it runs."""
        return None if self._health is None else self._health.address

    def scheduled_users(self) -> set[str]:
        """Mailboxes with a scheduled pass job."""
        if self._scheduler is None:
            return set()
        return {job.args[0] for job in self._scheduler.get_jobs()}

    # ---- start and stop ----------------------------------------------------------

    async def _start(self, config: ServiceConfig) -> None:
        self._beat()
        await self._start_health(config.metrics_listen)

        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_listener(_still_running, EVENT_JOB_MAX_INSTANCES)
        _SCHEDULER_LOG.addFilter(_STILL_RUNNING_FILTER)
        self._scheduler.start()
        self._schedule(config.users, config)
        BUILD_INFO.info({"version": __version__})
        self._spawn(self._refresh_states(config.users))

        self._status = f"{len(config.users)} users; waiting for the first pass"
        self._notifier.ready(self._status)
        self._spawn(self._heartbeat())  # WATCHDOG=1 only after READY=1
        self.ready.set()
        log.info(
            "service_started",
            users=len(config.users),
            interval=config.interval.total_seconds(),
            metrics_listen=config.metrics_listen,
            version=__version__,
        )

    async def _shutdown(self) -> None:
        self._stopping = True
        self._notifier.stopping("stopping")
        log.info(
            "service_stopping",
            reason=self._stop_reason,
            running_passes=len(self._running),
        )

        if self._scheduler is not None:
            self._scheduler.pause()
        cancelled = await self._drain_passes()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
            _SCHEDULER_LOG.removeFilter(_STILL_RUNNING_FILTER)

        await self._cancel_background()
        await self._stop_health()
        await self._close_all_runners()
        self._remove_signals()
        self._notifier.close()
        log.info("service_stopped", cancelled_passes=cancelled)

    async def _drain_passes(self) -> int:
        """Let running passes finish within the grace period, then cancel them."""
        running = set(self._running)
        if not running:
            return 0

        grace = self.config.stop_grace if self.config else DEFAULT_STOP_GRACE
        _, late = await asyncio.wait(running, timeout=grace.total_seconds())
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        return len(late)

    def _install_signals(self) -> None:
        if not self._install_signal_handlers:
            return

        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _remove_signals(self) -> None:
        if not self._install_signal_handlers:
            return

        loop = asyncio.get_running_loop()
        for sig in (*_STOP_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    # ---- scheduling --------------------------------------------------------------

    def _schedule(self, users: Iterable[str], config: ServiceConfig) -> None:
        assert self._scheduler is not None
        now = datetime.now(UTC)
        for mailbox in users:
            self._scheduler.add_job(
                self._pass_job,
                trigger=_trigger(mailbox, config, now),
                args=[mailbox],
                id=_job_id(mailbox),
                name=f"pass {mailbox}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(config.interval.total_seconds())),
                replace_existing=True,
            )

    def _unschedule(self, users: Iterable[str]) -> None:
        assert self._scheduler is not None
        for mailbox in users:
            self._scheduler.remove_job(_job_id(mailbox))
            with contextlib.suppress(KeyError):
                LAST_SUCCESS.remove(mailbox)

    # ---- one pass ----------------------------------------------------------------

    async def _pass_job(self, mailbox: str) -> None:
        """The scheduled job: one pass under the global cap and the deadline."""
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            with bind_pass(mailbox):
                await self._limited_pass(mailbox)
        finally:
            self._running.discard(task)

    async def _limited_pass(self, mailbox: str) -> None:
        try:
            async with self._limit:
                await self._run_one(mailbox)
        except asyncio.CancelledError:
            log.warning("pass_cancelled", reason="service stopping")

    async def _run_one(self, mailbox: str) -> None:
        assert self._slot is not None and self.config is not None
        slot, timeout = self._slot, self.config.pass_timeout.total_seconds()
        loop = asyncio.get_running_loop()
        started = loop.time()
        slot.active += 1
        try:
            result = await self._guarded_pass(slot.runner, mailbox, timeout)
        finally:
            slot.active -= 1
            await self._close_if_retired(slot)

        record_pass(result, duration=loop.time() - started, now=self._clock())
        self._status = pass_status(result, len(self.config.users))
        if not self._stopping:  # keep systemd's STATUS=stopping to the end
            self._notifier.status(self._status)
        await self._refresh_states([mailbox])

    async def _guarded_pass(
        self, runner: PassRunner, mailbox: str, timeout: float
    ) -> PassResult:
        """Run the pass; a hung or broken pass becomes a failed result."""
        try:
            return await asyncio.wait_for(runner.run_pass(mailbox), timeout)
        except TimeoutError:
            log.error("pass_timed_out", timeout=timeout)
            return PassResult(
                user=mailbox,
                ok=False,
                error_kind="timeout",
                error=f"pass exceeded {timeout:g}s",
            )
        except Exception as error:
            log.exception("pass_crashed")
            return PassResult(
                user=mailbox,
                ok=False,
                error_kind="internal",
                error=type(error).__name__,
            )

    # ---- reload ------------------------------------------------------------------

    async def _reload(self) -> bool:
        try:
            loaded, config = await self._load()
            runner = await self._build_runner(loaded)
        except ConfigError as error:
            return self._refuse([str(problem) for problem in error.problems])
        except Exception as error:
            return self._refuse([f"{type(error).__name__}: {error}"])

        old = self.config
        assert old is not None
        self.loaded, self.config = loaded, config
        await self._swap_runner(runner)
        self._limit = asyncio.Semaphore(config.max_parallel_passes)
        added, removed = self._reschedule(old, config)
        self._forget_states(removed)
        self._spawn(self._refresh_states(sorted(added)))
        if config.metrics_listen != old.metrics_listen:
            await self._stop_health()
            await self._start_health(config.metrics_listen, required=False)

        CONFIG_RELOADS.labels(result="ok").inc()
        log.info(
            "config_reloaded",
            users=len(config.users),
            added=sorted(added),
            removed=sorted(removed),
            interval=config.interval.total_seconds(),
        )
        return True

    def _refuse(self, problems: list[str]) -> bool:
        CONFIG_RELOADS.labels(result="refused").inc()
        log.error(
            "config_reload_refused",
            problems=problems,
            users=len(self.config.users) if self.config else 0,
        )
        return False

    def _reschedule(
        self, old: ServiceConfig, new: ServiceConfig
    ) -> tuple[set[str], set[str]]:
        added = set(new.users) - set(old.users)
        removed = set(old.users) - set(new.users)
        self._unschedule(removed)
        timing_changed = (old.interval, old.jitter) != (new.interval, new.jitter)
        kept = set(new.users) & set(old.users)
        self._schedule(added | kept if timing_changed else added, new)
        return added, removed

    # ---- runners -----------------------------------------------------------------

    async def _load(self) -> tuple[C, ServiceConfig]:
        loaded = await asyncio.to_thread(self._loader)
        return loaded, self._view_of(loaded)

    async def _build_runner(self, loaded: C) -> PassRunner:
        runner = self._runner_factory(loaded)
        if inspect.isawaitable(runner):
            return await runner
        return runner

    async def _swap_runner(self, runner: PassRunner) -> None:
        old, self._slot = self._slot, _RunnerSlot(runner)
        if old is not None:
            old.retired = True
            await self._close_if_retired(old)

    async def _close_if_retired(self, slot: _RunnerSlot) -> None:
        if slot.retired and slot.active == 0:
            await _close_runner(slot)

    async def _close_all_runners(self) -> None:
        if self._slot is not None:
            await _close_runner(self._slot)

    # ---- users by state ----------------------------------------------------------

    async def _refresh_states(self, mailboxes: Sequence[str]) -> None:
        """Ask for these users' states and export ``syncd_users`` by state."""
        if self._user_states is None or not mailboxes:
            return

        try:
            found = await asyncio.to_thread(self._user_states, list(mailboxes))
        except Exception as error:
            log.warning("user_states_unavailable", error=redact_text(str(error)))
            return
        configured = set(self.config.users) if self.config else set()
        for mailbox in mailboxes:
            if mailbox in configured:
                self._states[mailbox] = found.get(mailbox, "active")
        self._publish_states()

    def _forget_states(self, mailboxes: Iterable[str]) -> None:
        for mailbox in mailboxes:
            self._states.pop(mailbox, None)
        self._publish_states()

    def _publish_states(self) -> None:
        counts = dict.fromkeys(self._published_states, 0)
        for state in self._states.values():
            counts[state] = counts.get(state, 0) + 1
        for state, count in counts.items():
            USERS.labels(state=state).set(count)
        self._published_states = set(counts)

    # ---- health ------------------------------------------------------------------

    async def _start_health(self, listen: str | None, *, required: bool = True) -> None:
        """Serve health and metrics; after a reload a bind failure is only logged."""
        if listen is None:
            return

        health = HealthServer(listen, livez=self._liveness, readyz=self._readiness)
        try:
            await health.start()
        except HealthListenError:
            if required:
                raise
            return
        self._health = health

    async def _stop_health(self) -> None:
        if self._health is not None:
            await self._health.close()
            self._health = None

    def _beat_period(self) -> float:
        watchdog = self._notifier.watchdog_interval
        if watchdog is None:
            return self._heartbeat_interval
        return min(self._heartbeat_interval, watchdog)

    def _beat(self) -> None:
        self._last_beat = asyncio.get_running_loop().time()

    async def _heartbeat(self) -> None:
        """Prove the loop runs: feeds /livez and systemd's watchdog."""
        watchdog = self._notifier.watchdog_interval is not None
        period = self._beat_period()
        while True:
            self._beat()
            if watchdog:
                self._notifier.watchdog()
            await asyncio.sleep(period)

    async def _liveness(self) -> str | None:
        age = asyncio.get_running_loop().time() - self._last_beat
        limit = max(LIVENESS_LIMIT, 3 * self._beat_period())
        if age > limit:
            return f"event loop heartbeat is {age:.1f}s old"
        return None

    async def _readiness(self) -> str | None:
        if self._stopping:
            return "stopping"
        if self.config is None:
            return "configuration not loaded"
        if self._ready_check is None:
            return None

        try:
            outcome = await asyncio.wait_for(
                _call(self._ready_check), READY_CHECK_TIMEOUT
            )
        except TimeoutError:
            return "ready check timed out"
        except Exception as error:
            first_line = f"{type(error).__name__}: {error}".splitlines()[0]
            return redact_text(first_line[:200])
        return None if outcome is None or outcome is True else "ready check failed"

    # ---- tasks -------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel_background(self) -> None:
        tasks = [t for t in self._background if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _trigger(mailbox: str, config: ServiceConfig, now: datetime) -> IntervalTrigger:
    jitter = config.jitter.total_seconds()
    return IntervalTrigger(
        seconds=config.interval.total_seconds(),
        start_date=now + first_run_delay(mailbox, config.interval,
                                         len(config.users)),
        jitter=jitter or None,
        timezone=UTC,
    )


def _job_id(mailbox: str) -> str:
    return f"{_JOB_PREFIX}{mailbox}"


_SCHEDULER_LOG = logging.getLogger("apscheduler.scheduler")


class _StillRunningFilter(logging.Filter):
    """Drop APScheduler's sentence for a skipped run; the service counts it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in str(record.msg)


_STILL_RUNNING_FILTER = _StillRunningFilter()


def _still_running(event: JobSubmissionEvent) -> None:
    """A user's next pass came due while the previous one had not ended."""
    PASSES_SKIPPED.labels(reason="still_running").inc()
    log.debug(
        "pass_skipped",
        user=str(event.job_id).removeprefix(_JOB_PREFIX),
        reason="still_running",
    )


async def _call(check: Callable[[], object]) -> object:
    """Run a sync check in a thread (it may block on a database) or await it."""
    if inspect.iscoroutinefunction(check):
        return await check()

    outcome = await asyncio.to_thread(check)
    if inspect.isawaitable(outcome):
        return await outcome
    return outcome


async def _close_runner(slot: _RunnerSlot) -> None:
    if slot.closed:
        return

    slot.closed = True
    aclose = getattr(slot.runner, "aclose", None)
    if aclose is None:
        return
    try:
        outcome = aclose()
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        log.exception("runner_close_failed")
