"""Knobs that make the simulator misbehave, and counters of what it saw.

Every knob is a plain attribute or a one-shot injection; both are safe to
change from any thread while the server runs.  ``to_json``/``apply`` expose
them to the control API.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

RetryAfter = int | float | str | None  # seconds, fractional, "date", or absent
HOLD_POINTS = ("inloox_create", "inloox_created", "graph_page")
"""Where a request can be held (see :meth:`Faults.hold`)."""
HOLD_POLL = 0.01
SYNC_STATE_CODES = ("SyncStateNotFound", "syncStateNotFound", "resyncRequired")


@dataclass
class _Injection:
    """A one-shot fault armed for the next ``count`` matching requests."""

    count: int
    status: int = 0
    retry_after: RetryAfter = None
    pages_only: bool = False
    mailbox: str | None = None  # only this mailbox's requests (Graph throttling)


@dataclass
class _Hold:
    """One request held at a hold point until the test releases it."""

    point: str
    released: bool = False
    answer: bool = True


class Faults:
    """Latency, limits and one-shot failures of the three services."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.latency: dict[str, float] = {"identity": 0.0, "graph": 0.0, "inloox": 0.0}
        self.graph_concurrency_limit = 4
        self.graph_request_budget = 10_000
        self.graph_budget_period = 600.0
        self.inloox_concurrency = 16
        self.delta_duplicates = True
        self.delta_empty_pages = 0
        self.page_size_extra = 0
        self.create_response: str | None = None  # overrides the scenario's
        self.device_login_user: str | None = None  # None: the first user
        self.client_secret_rejected = False
        self._graph_throttles: list[_Injection] = []
        self._graph_failures: list[_Injection] = []
        self._inloox_throttles: list[_Injection] = []
        self._expired: dict[str, str] = {}
        self._drops = 0
        self._bad_gateways = 0
        self._revoked: set[str | None] = set()
        self._hold_armed: Counter[str] = Counter()
        self._holding: list[_Hold] = []
        self.delta_epochs: Counter[str] = Counter()

    # ----- arming -----------------------------------------------------

    def throttle_graph(
        self, count: int = 1, retry_after: RetryAfter = 1, mailbox: str | None = None
    ) -> None:
        """The next ``count`` Graph requests (of ``mailbox`` only, if given)
        answer 429 (Retry-After as given: int or float seconds, the string
        "date" for an HTTP date, None for no header)."""
        wanted = mailbox.lower() if mailbox else None
        with self._lock:
            self._graph_throttles.append(
                _Injection(count, 429, retry_after, mailbox=wanted)
            )

    def fail_graph(
        self, status: int = 503, count: int = 1, *, pages_only: bool = True
    ) -> None:
        """The next ``count`` Graph requests answer ``status`` (503/504);
        ``pages_only`` hits only continuation pages (mid-round)."""
        with self._lock:
            self._graph_failures.append(_Injection(count, status, 10, pages_only))

    def throttle_inloox(self, count: int = 1, retry_after: RetryAfter = 1) -> None:
        with self._lock:
            self._inloox_throttles.append(_Injection(count, 429, retry_after))

    def expire_delta(self, mailbox: str, code: str = "SyncStateNotFound") -> None:
        """Forget every delta/skip token of the mailbox: they answer 410 with
        ``code`` (SyncStateNotFound, syncStateNotFound or resyncRequired)."""
        with self._lock:
            self._expired[mailbox.lower()] = code
            self.delta_epochs[mailbox.lower()] += 1

    def drop_after_commit(self, count: int = 1) -> None:
        """InLoox creates commit, then the TCP connection closes unanswered."""
        with self._lock:
            self._drops += count

    def bad_gateway_after_commit(self, count: int = 1) -> None:
        """InLoox creates commit, then answer 502."""
        with self._lock:
            self._bad_gateways += count

    def hold(self, point: str, count: int = 1) -> None:
        """Hold the next ``count`` requests reaching ``point`` until released.

        ``inloox_create``: a CreateTimeEntryFromGraphEvent arrived, nothing
        committed yet.  ``inloox_created``: it committed, the answer is not
        sent.  ``graph_page``: a continuation page of a delta round arrived.
        :meth:`held` tells how many wait there; a crash test kills the client
        then, and releases them.
        """
        if point not in HOLD_POINTS:
            raise ValueError(f"unknown hold point {point!r}; one of {HOLD_POINTS}")
        with self._lock:
            self._hold_armed[point] += count

    def held(self, point: str | None = None) -> int:
        """Requests waiting at ``point`` (at any point for ``None``)."""
        with self._lock:
            return sum(1 for h in self._holding if point in (None, h.point))

    def release(self, point: str | None = None, answer: bool = True) -> int:
        """Let held requests go on (``answer=False``: close the connection
        instead; at ``inloox_create`` nothing is committed then); disarm."""
        with self._lock:
            chosen = [h for h in self._holding if point in (None, h.point)]
            for hold in chosen:
                hold.released, hold.answer = True, answer
            for name in [point] if point else list(self._hold_armed):
                self._hold_armed.pop(name, None)
            return len(chosen)

    async def pass_point(self, point: str) -> bool:
        """Server side: wait here if a hold is armed; False means drop it."""
        with self._lock:
            if self._hold_armed[point] <= 0:
                return True
            self._hold_armed[point] -= 1
            hold = _Hold(point)
            self._holding.append(hold)
        while True:
            with self._lock:
                if hold.released:
                    self._holding.remove(hold)
                    return hold.answer
            await asyncio.sleep(HOLD_POLL)

    def holds_json(self) -> dict[str, Any]:
        with self._lock:
            waiting = Counter(h.point for h in self._holding if not h.released)
            return {"armed": dict(self._hold_armed), "held": dict(waiting)}

    def reject_client_secret(self, rejected: bool = True) -> None:
        with self._lock:
            self.client_secret_rejected = rejected

    def revoke_refresh_tokens(self, mailbox: str | None = None) -> None:
        """Invalidate refresh tokens issued so far (of one user, or all)."""
        with self._lock:
            self._revoked.add(mailbox.lower() if mailbox else None)

    # ----- consuming (server side) ------------------------------------

    def take_graph_throttle(self, mailbox: str | None = None) -> _Injection | None:
        return self._take(self._graph_throttles, continuation=False, mailbox=mailbox)

    def take_graph_failure(self, continuation: bool) -> _Injection | None:
        return self._take(self._graph_failures, continuation)

    def take_inloox_throttle(self) -> _Injection | None:
        return self._take(self._inloox_throttles, continuation=False)

    def expired_code(self, mailbox: str) -> str:
        with self._lock:
            return self._expired.get(mailbox.lower(), "SyncStateNotFound")

    def take_commit_fault(self) -> str | None:
        """ "drop", "502" or None for the create that just committed."""
        with self._lock:
            if self._drops:
                self._drops -= 1
                return "drop"
            if self._bad_gateways:
                self._bad_gateways -= 1
                return "502"
            return None

    def take_revocations(self) -> set[str | None]:
        with self._lock:
            revoked, self._revoked = self._revoked, set()
            return revoked

    def _take(
        self, queue: list[_Injection], continuation: bool, mailbox: str | None = None
    ) -> _Injection | None:
        with self._lock:
            for injection in queue:
                if injection.pages_only and not continuation:
                    continue
                if injection.mailbox not in (None, (mailbox or "").lower()):
                    continue
                injection.count -= 1
                if injection.count <= 0:
                    queue.remove(injection)
                return injection
            return None

    # ----- control API ------------------------------------------------

    _SETTABLE = (
        "latency",
        "graph_concurrency_limit",
        "graph_request_budget",
        "graph_budget_period",
        "inloox_concurrency",
        "delta_duplicates",
        "delta_empty_pages",
        "page_size_extra",
        "create_response",
        "device_login_user",
    )

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {name: getattr(self, name) for name in self._SETTABLE}

    def apply(self, changes: dict[str, Any]) -> None:
        """Set knobs and arm injections from a control-API JSON body."""
        actions = {
            "throttle_graph": self.throttle_graph,
            "fail_graph": self.fail_graph,
            "throttle_inloox": self.throttle_inloox,
            "expire_delta": self.expire_delta,
            "drop_after_commit": self.drop_after_commit,
            "bad_gateway_after_commit": self.bad_gateway_after_commit,
            "reject_client_secret": self.reject_client_secret,
            "revoke_refresh_tokens": self.revoke_refresh_tokens,
            "hold": self.hold,
            "release": self.release,
        }
        for name, value in changes.items():
            if name in actions:
                _call(actions[name], value)
            elif name in self._SETTABLE:
                with self._lock:
                    setattr(self, name, value)
            else:
                raise KeyError(name)


def _call(action: Any, value: Any) -> None:
    if isinstance(value, dict):
        action(**value)
    elif isinstance(value, list):
        action(*value)
    elif value is None:
        action()
    else:
        action(value)


def retry_after_header(value: RetryAfter) -> list[tuple[str, str]]:
    """The Retry-After header for a knob value (none when ``None``)."""
    if value is None:
        return []
    if value == "date":
        moment = datetime.now(UTC) + timedelta(seconds=2)
        return [("Retry-After", format_datetime(moment, usegmt=True))]
    return [("Retry-After", str(value))]


@dataclass
class Stats:
    """Counters of everything the simulator served (a snapshot when read)."""

    requests: Counter[tuple[str, str, str, int]] = field(default_factory=Counter)
    without_immutable_id: int = 0
    # per mailbox, the most Graph requests open at once, counting one that was
    # refused for concurrency: above the limit means a client was throttled
    max_concurrent: dict[str, int] = field(default_factory=dict)
    inloox_max_concurrent: int = 0
    inloox_writes: int = 0
    inloox_creates: int = 0
    tokens_issued: Counter[str] = field(default_factory=Counter)
    throttled: int = 0

    def count(
        self,
        service: str | None = None,
        method: str | None = None,
        kind: str | None = None,
        status: int | None = None,
    ) -> int:
        """Requests matching every given part of (service, method, kind, status)."""
        wanted = (service, method, kind, status)
        return sum(
            n
            for key, n in self.requests.items()
            if all(w is None or w == k for w, k in zip(wanted, key, strict=True))
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": [
                {"service": s, "method": m, "kind": k, "status": c, "count": n}
                for (s, m, k, c), n in sorted(self.requests.items())
            ],
            "without_immutable_id": self.without_immutable_id,
            "max_concurrent": dict(self.max_concurrent),
            "inloox_max_concurrent": self.inloox_max_concurrent,
            "inloox_writes": self.inloox_writes,
            "inloox_creates": self.inloox_creates,
            "tokens_issued": dict(self.tokens_issued),
            "throttled": self.throttled,
        }
