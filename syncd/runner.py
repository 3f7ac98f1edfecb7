"""Runs one user's pass with its bookkeeping: clients, pauses, leases, summary.

``Runner`` turns configuration into the concrete clients (built lazily in
the event loop that uses them), asks the engine for a pass, and turns what
happened into one ledger record, one summary log line and a ``PassResult``.
A user's failure is classified here and never escapes to other users.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import structlog

from syncd.engine import Engine, PassContext, utcnow
from syncd.errors import (
    AuthError,
    DeltaExpired,
    LeaseLost,
    LedgerError,
    PermanentError,
    SyncdError,
    ThrottledError,
    TransientError,
)
from syncd.model import Action, PassResult
from syncd.redact import redact_text

if TYPE_CHECKING:
    from syncd.ledger import LeaseKeeper

log = structlog.get_logger("syncd.runner")
AUTH_ADVICE = (
    "no calls for this user until its credentials change: fix "
    "graph.client_secret or the InLoox key, or run `syncd login`"
)
QUIET_KINDS = frozenset({"lease_elsewhere", "still_running", "auth_required", "paused"})
"""Passes that did nothing because the user is paused or served elsewhere:
logged at DEBUG, so a paused user costs one clear line, not one per pass."""
THROTTLE_PAUSE = timedelta(minutes=1)
"""How long a mailbox rests at least once Graph kept throttling it through every
retry of a pass (a longer Retry-After is honoured); the others go on."""

LEASE_RENEW_MAX = timedelta(seconds=30)
"""Leases are renewed every schedule interval, but at least this often."""

_SERVING: set[str] = set()
"""Mailboxes with a pass running in this process, across runners (a reload
builds a new runner while the old one may still finish a pass): two passes
of one user must never overlap, or one would take the other's claim for an
interrupted one."""


def default_owner() -> str:
    """A lease owner name unique to this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def request_deadline(config: Any) -> timedelta:
    """The longest one HTTP request may take, all phases together."""
    return 2 * config.http.timeout  # type: ignore[no-any-return]


def lease_timing(config: Any) -> tuple[timedelta, timedelta]:
    """``(ttl, renew_every)`` of per-user leases for this configuration.

    Renewed every interval (at most every 30 s), a lease outlives three
    missed renewals and two request deadlines: a process that stops
    renewing stops its passes, and their last requests end, before another
    process may take its users over.
    """
    renew_every = min(config.schedule.interval, LEASE_RENEW_MAX)
    return max(3 * renew_every, 2 * request_deadline(config)), renew_every


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """One line of ``syncd plan``: an event, its decision and the action."""

    action: Action
    subject: str | None
    start: str
    end: str


class Runner:
    """Serves the users of one configuration; implements the service's PassRunner."""

    def __init__(
        self,
        config: Any,
        ledger: Any,
        *,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
        use_leases: bool | None = None,
        inloox_limit: asyncio.Semaphore | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.clock = clock
        self.engine = Engine(ledger, clock=clock)
        self.owner = owner or default_owner()
        self.use_leases = (
            ledger.dialect == "postgresql" if use_leases is None else use_leases
        )
        self._auth: Any = None
        self._source: Any = None
        self._targets: dict[str, Any] = {}
        self._reread: set[str] = set()
        """Users whose whole window this runner has read once: the first pass
        after a start or a reload reads it anew, so changed rules reach events
        the delta rounds would not bring again."""
        self._inloox_limit = inloox_limit
        self._shared_limit = inloox_limit is not None
        self._inloox_transport: Any = None
        self._leases: LeaseKeeper | None = None
        self._fences: dict[str, int | None] = {}
        self._settled: dict[str, int | None] = {}
        self.last_actions: dict[str, list[Action]] = {}

    # ---- clients -----------------------------------------------------------

    def _http_settings(self, per_key: int) -> Any:
        return http_settings(self.config, per_key)

    def auth(self) -> Any:
        if self._auth is None:
            self._auth = build_auth(self.config)
        return self._auth

    def source(self) -> Any:
        if self._source is None:
            from syncd.graph import GraphCalendar

            graph = self.config.graph
            mode: Literal["app", "delegated"] = (
                "app" if graph.auth == "client_credentials" else "delegated"
            )
            self._source = GraphCalendar(
                graph.base_url,
                self.auth(),
                mode=mode,
                page_size=graph.page_size,
                ca_bundle=self.config.tls.ca_bundle,
                settings=self._http_settings(self.config.http.graph_concurrency),
            )
        return self._source

    def target(self, user: Any) -> Any:
        api_key, token = _inloox_credentials(self.config, user)
        key = _fingerprint(api_key or token or "")
        client = self._targets.get(key)
        if client is None:
            from syncd.inloox import InLooxClient

            if self._inloox_limit is None:
                self._inloox_limit = asyncio.Semaphore(
                    self.config.http.inloox_concurrency
                )
            settings = self._http_settings(self.config.http.inloox_concurrency)
            client = InLooxClient(
                self.config.inloox.base_url,
                api_key=api_key,
                token=token,
                ca_bundle=self.config.tls.ca_bundle,
                settings=settings,
                limit=self._inloox_limit,
                transport=self._inloox_pool(settings),
            )
            self._targets[key] = client
        return client

    def _inloox_pool(self, settings: Any) -> Any:
        """One connection pool for every InLoox key: a key is a header, so the
        users' clients share connections instead of each opening (and
        TLS-handshaking) its own."""
        if self._inloox_transport is None:
            import httpx

            from syncd.http import httpx_limits, ssl_context

            self._inloox_transport = httpx.AsyncHTTPTransport(
                verify=ssl_context(self.config.tls.ca_bundle),
                limits=httpx_limits(settings),
                retries=0,
            )
        return self._inloox_transport

    def leases(self) -> LeaseKeeper:
        from syncd.ledger import LeaseKeeper

        if self._leases is None:
            ttl, renew_every = lease_timing(self.config)
            self._leases = LeaseKeeper(
                self.ledger,
                self.owner,
                [u.mailbox for u in self.config.users],
                ttl=ttl,
                renew_every=renew_every,
                request_deadline=request_deadline(self.config),
            )
        return self._leases

    async def aclose(self) -> None:
        if self._leases is not None:
            await self._leases.aclose()
            self._leases = None
        if self._source is not None:
            await self._source.aclose()
        for client in self._targets.values():
            await client.aclose()
        if self._inloox_transport is not None:
            await self._inloox_transport.aclose()  # the pool the clients shared
        if self._auth is not None:
            self._auth.close()
        self._source, self._targets = None, {}
        if not self._shared_limit:
            self._inloox_limit = None
        self._inloox_transport = self._auth = None

    # ---- passes ------------------------------------------------------------

    async def run_pass(self, mailbox: str) -> PassResult:
        """One pass for one user; never raises for the user's own failures."""
        from syncd.logs import bind_pass

        user = self.config.user(mailbox)
        started = time.monotonic()
        result = PassResult(user=mailbox, ok=True)
        key = user.mailbox.lower()
        if key in _SERVING:
            result.error_kind = "still_running"
            return result
        _SERVING.add(key)
        try:
            with bind_pass(mailbox):
                await self._guarded_pass(user, result)
                result.duration = time.monotonic() - started
                self._finish(user, result)
        finally:
            _SERVING.discard(key)
            self._fences.pop(user.mailbox, None)
        return result

    async def _guarded_pass(self, user: Any, result: PassResult) -> None:
        """Run the pass as its own task, which the lease keeper may stop."""
        inner = asyncio.ensure_future(self._pass(user, result))
        try:
            await inner
        except asyncio.CancelledError:
            outer = asyncio.current_task()
            if (outer is not None and outer.cancelling()) or not self._lost(user):
                raise
            self._failed(
                user,
                result,
                LeaseLost("the lease was lost; the pass stopped", user=user.mailbox),
            )
        except Exception as exc:  # classified, never lost
            self._failed(user, result, exc)

    def _lost(self, user: Any) -> bool:
        return self._leases is not None and self._leases.stopped(user.mailbox)

    async def _pass(self, user: Any, result: PassResult) -> None:
        now = self.clock()
        state = self._user_state(user)
        blocked = self._blocked(user, state, now)
        if blocked is not None:
            result.ok, result.error_kind, result.error = False, *blocked
            return

        ours, fence = self._lease(user.mailbox)
        if not ours:
            result.error_kind = "lease_elsewhere"
            return

        self._fences[user.mailbox] = fence
        task = asyncio.current_task()
        assert task is not None
        serving = (
            self.leases().serving(user.mailbox, task)
            if self.use_leases
            else contextlib.nullcontext()
        )
        with serving:
            await self._apply(user, result, now, fence)
            if state is not None and state.status != "active":
                self.ledger.set_user_status(user.mailbox, "active", fence=fence)
                log.info("user_resumed", previous=state.status)

    async def _apply(
        self, user: Any, result: PassResult, now: datetime, fence: int | None
    ) -> None:
        self._recover_pending(user.mailbox, fence)
        before = self._requests(user)
        ctx = PassContext(
            user=user,
            ledger=self.ledger,
            source=self.source(),
            target=self.target(user),
            now=now,
            fence=fence,
            create_concurrency=self.config.http.inloox_concurrency,
            fresh=user.mailbox not in self._reread,
        )
        actions = await self.engine.run(ctx)
        self._settled[user.mailbox] = fence
        if not ctx.keep_cursor:
            self._reread.add(user.mailbox)
        self.last_actions[user.mailbox] = actions
        _count(result, ctx, actions)
        result.requests = self._requests(user) - before
        if ctx.keep_cursor:
            result.ok, result.error_kind = False, "transient"
            result.error = "a change could not be applied; the round is replayed"

    def _recover_pending(self, mailbox: str, fence: int | None) -> None:
        """PENDING claims of an interrupted pass become IN_DOUBT.

        Only needed when this process has not yet ended a pass of the user
        cleanly under this lease: a clean pass leaves no claim PENDING, and
        while we hold the lease nobody else claims.  A restart, a retaken
        lease or an interrupted pass of ours all check again.
        """
        settled = mailbox in self._settled and self._settled.pop(mailbox) == fence
        if settled:
            return

        in_doubt = self.ledger.mark_pending_in_doubt(mailbox, fence=fence)
        if in_doubt:
            log.warning(
                "claims_in_doubt",
                count=in_doubt,
                detail="an earlier pass was interrupted; looked up first",
            )

    def _user_state(self, user: Any) -> Any:
        """The user's standing in the ledger, read unless known to be active.

        Without leases (SQLite: one process) only this process writes it, and
        a pass of ours that ended cleanly left it active.
        """
        if not self.use_leases and user.mailbox in self._settled:
            return None
        return self.ledger.user_state(user.mailbox)

    def _blocked(
        self, user: Any, state: Any, now: datetime
    ) -> tuple[str, str] | None:
        """Why this user must not be served now (auth pause, throttle pause)."""
        if state is None or state.status == "active":
            return None
        if state.status == "auth_required":
            if state.reason == self._credential_stamp(user):
                return "auth_required", "credentials rejected; waiting for new ones"
            return None
        if state.paused_until is not None and state.paused_until > now:
            return "paused", f"throttled; paused until {state.paused_until.isoformat()}"
        return None

    def _lease(self, mailbox: str) -> tuple[bool, int | None]:
        """Whether we serve this user now, and the fencing token of its lease."""
        if not self.use_leases:
            return True, None
        fence = self.leases().take(mailbox)
        return fence is not None, fence

    def _credential_stamp(self, user: Any) -> str:
        """Changes whenever the credentials a user depends on change, or the
        settings they are presented with (where, as which application)."""
        graph = self.config.graph
        parts = [_secret(graph.client_secret), *_inloox_credentials(self.config, user),
                 str(graph.authority), graph.client_id, graph.auth,
                 str(graph.base_url), str(self.config.inloox.base_url)]
        if graph.token_cache is not None:
            try:
                parts.append(str(os.stat(graph.token_cache).st_mtime_ns))
            except OSError:
                parts.append("no-cache")
        return "auth:" + _fingerprint("|".join(p or "" for p in parts))

    def _requests(self, user: Any) -> int:
        """Requests sent so far for this user: its Graph mailbox and its InLoox
        client (shared by the users of one InLoox credential)."""
        graph = self._source.request_count(user.mailbox) if self._source else 0
        return int(graph) + int(self.target(user).requests)

    def _failed(self, user: Any, result: PassResult, exc: Exception) -> None:
        result.ok = False
        result.error = str(exc)
        result.error_kind = _kind(exc)
        try:
            self._pause(user, result, exc)
        except SyncdError as nested:
            log.error("user_status_not_saved", error=str(nested))
        if not isinstance(exc, SyncdError):
            log.error("pass_crashed", exc_info=exc)

    def _pause(self, user: Any, result: PassResult, exc: Exception) -> None:
        """Auth failures wait for new credentials, throttling for its pause."""
        if isinstance(exc, AuthError):
            self.ledger.set_user_status(
                user.mailbox,
                "auth_required",
                reason=self._credential_stamp(user),
                fence=self._fences.get(user.mailbox),
            )
            log.error("user_auth_required", error=str(exc), advice=AUTH_ADVICE)
        elif isinstance(exc, ThrottledError):
            pause = max(timedelta(seconds=exc.retry_after or 0), THROTTLE_PAUSE)
            self.ledger.set_user_status(
                user.mailbox,
                "paused",
                reason="throttled",
                paused_until=self.clock() + pause,
                fence=self._fences.get(user.mailbox),
            )
            log.warning("user_throttled", pause_seconds=pause.total_seconds())

    def _finish(self, user: Any, result: PassResult) -> None:
        summary = _summary(result)
        if result.error_kind in QUIET_KINDS:
            log.debug("pass_skipped", reason=result.error_kind, error=result.error)
            return
        try:
            self.ledger.record_pass(
                user.mailbox,
                ok=result.ok,
                summary=summary,
                error=None if result.error is None else redact_text(result.error),
                fence=self._fences.get(user.mailbox),
            )
        except SyncdError as exc:
            log.error("pass_record_failed", error=str(exc))
        level = log.info if result.ok and not result.failed else log.warning
        level("pass_finished", **summary)

    # ---- dry run -----------------------------------------------------------

    async def plan(self, mailbox: str) -> list[PlannedEvent]:
        """Every event in the window, its decision and the action; writes nothing."""
        from syncd import plan as planner

        user = self.config.user(mailbox)
        ctx = PassContext(
            user=user,
            ledger=self.ledger,
            source=self.source(),
            target=self.target(user),
            now=self.clock(),
            dry_run=True,
        )
        round_, _content, _window, known = await self.engine.prepare(ctx, fresh=True)
        resolve = await self.engine.resolver(ctx, round_)
        actions = planner.plan(round_, known, user, now=ctx.now, resolve=resolve)
        zone = _display_zone(user.timezone)
        return [_planned(a, known.get(a.event_id), zone) for a in actions]


def config_secrets(config: Any) -> list[str]:
    """Every secret value of a configuration, for the log redactor."""
    values = [config.graph.client_secret, config.inloox.api_key, config.inloox.token]
    for user in config.users:
        own = getattr(user, "inloox", None)
        if own is not None:
            values += [own.api_key, own.token]
    return [s for s in (_secret(v) for v in values) if s]


def register_secrets(config: Any) -> None:
    from syncd.redact import register_secret

    for secret in config_secrets(config):
        register_secret(secret)


def http_settings(config: Any, per_key: int) -> Any:
    """Timeouts, limits and retries of one client, from ``http:`` and ``retry:``."""
    from syncd.http import HttpSettings

    http = config.http
    return HttpSettings(
        timeout=http.timeout.total_seconds(),
        connect_timeout=http.connect_timeout.total_seconds(),
        total_timeout=request_deadline(config).total_seconds(),
        max_concurrency=http.max_concurrency,
        per_key_concurrency=per_key,
        max_attempts=config.retry.max_attempts,
        base_delay=config.retry.base_delay.total_seconds(),
        max_delay=config.retry.max_delay.total_seconds(),
    )


def build_auth(config: Any) -> Any:
    from syncd.auth import ClientCredentialsAuth, DeviceCodeAuth

    graph = config.graph
    settings = http_settings(config, config.http.max_concurrency)
    if graph.auth == "client_credentials":
        return ClientCredentialsAuth(
            graph.authority,
            graph.client_id,
            _secret(graph.client_secret) or "",
            ca_bundle=config.tls.ca_bundle,
            settings=settings,
        )
    return DeviceCodeAuth(
        graph.authority,
        graph.client_id,
        token_cache=graph.token_cache,
        ca_bundle=config.tls.ca_bundle,
        settings=settings,
    )


def _inloox_credentials(config: Any, user: Any) -> tuple[str | None, str | None]:
    own = getattr(user, "inloox", None)
    source = own if own is not None and (own.api_key or own.token) else config.inloox
    return _secret(source.api_key), _secret(source.token)


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter else value)


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _kind(exc: Exception) -> str:
    kinds: tuple[tuple[type[Exception], str], ...] = (
        (AuthError, "auth"),
        (ThrottledError, "throttled"),
        (DeltaExpired, "transient"),
        (TransientError, "transient"),
        (PermanentError, "permanent"),
        (LeaseLost, "lease"),
        (LedgerError, "ledger"),
    )
    return next((name for cls, name in kinds if isinstance(exc, cls)), "crash")


def _count(result: PassResult, ctx: PassContext, actions: list[Action]) -> None:
    result.seen = sum(1 for a in actions if a.event is not None)
    result.booked = ctx.outcomes["booked"] + ctx.outcomes["recovered"]
    result.updated = ctx.outcomes["updated"]
    result.retracted = ctx.outcomes["retracted"]
    result.unchanged = ctx.outcomes["unchanged"]
    result.failed = ctx.outcomes["failed"]
    result.skipped = dict(ctx.skipped)


def _summary(result: PassResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "seen": result.seen,
        "booked": result.booked,
        "updated": result.updated,
        "retracted": result.retracted,
        "unchanged": result.unchanged,
        "failed": result.failed,
        "skipped": result.skipped,
        "requests": result.requests,
        "duration_ms": round(result.duration * 1000, 1),
        "error_kind": result.error_kind,
        "error": result.error,
    }


def _planned(action: Action, record: Any, zone: tzinfo) -> PlannedEvent:
    """One plan line; instants shown in the user's zone, all-day events as dates."""
    event = action.event
    start = event.start if event else (record.start if record else None)
    end = event.end if event else (record.end if record else None)
    return PlannedEvent(
        action=action,
        subject=event.subject if event else None,
        start=_shown(start, zone),
        end=_shown(end, zone),
    )


def _shown(value: datetime | date | None, zone: tzinfo) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(zone).isoformat()
    return value.isoformat()


def _display_zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        return UTC
