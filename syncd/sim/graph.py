"""Microsoft Graph calendar: calendarView delta rounds, plain calendarView, events.

A round's items are fixed when the round starts (initial request or a delta
link); its pages are served from server-side state behind ``$skiptoken``.
The delta link remembers the calendar version the round was cut at, so the
next round returns what changed after it.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode

from syncd.sim.calendar import Calendar, EventNotFound
from syncd.sim.faults import RetryAfter, retry_after_header
from syncd.sim.http import Request, Response, dropped, json_response
from syncd.sim.identity import Grant

if TYPE_CHECKING:
    from syncd.sim.simulator import Simulator

JSON = dict[str, Any]
_FORBIDDEN_ON_DELTA = ("$select", "$filter", "$top", "$orderby", "$expand", "$search")


@dataclass
class _Round:
    """One delta round in progress: its items and where the client is."""

    mailbox: str
    start: datetime
    end: datetime
    items: list[JSON]
    watermark: int
    epoch: int
    empty_pages: int
    delta_token: str = ""


@dataclass(frozen=True)
class _DeltaState:
    mailbox: str
    start: datetime
    end: datetime
    watermark: int
    epoch: int


@dataclass
class _Target:
    """Who the request is for and how it wants its answer."""

    mailbox: str
    prefix: str  # "users/{mailbox}" or "me"
    rest: list[str]
    immutable: bool
    page_size: int
    base_url: str
    skiptoken_context: dict[str, str] = field(default_factory=dict)


class GraphError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.response = json_response(
            status,
            {
                "error": {
                    "code": code,
                    "message": message,
                    "innerError": {"request-id": secrets.token_hex(16)},
                }
            },
            headers,
        )


class Graph:
    """Serves /v1.0 for the simulator's calendars."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._lock = threading.Lock()
        self._pages: dict[str, tuple[_Round, int]] = {}
        self._deltas: dict[str, _DeltaState] = {}
        self._in_flight: defaultdict[str, int] = defaultdict(int)
        self._recent: defaultdict[str, deque[float]] = defaultdict(deque)

    async def handle(self, request: Request) -> Response:
        kind = _kind(request.path)
        try:
            response = await self._handle(request)
        except GraphError as error:
            response = error.response
        status = 0 if response.drop else response.status
        self._sim.update_stats(
            lambda s: s.requests.update([("graph", request.method, kind, status)])
        )
        return response

    async def _handle(self, request: Request) -> Response:
        grant = self._sim.identity.check(request.header("authorization"))
        if grant is None:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token is empty, invalid or expired.",
            )
        target = self._target(request, grant)
        if not target.immutable:
            self._sim.update_stats(_count_without_immutable)
        self._throttle(target.mailbox)
        self._enter(target.mailbox)
        try:
            delay = self._sim.faults.latency.get("graph", 0.0)
            if delay:
                await asyncio.sleep(delay)
            continuation = "$skiptoken" in request.query
            if continuation and not await self._sim.faults.pass_point("graph_page"):
                return dropped()
            failure = self._sim.faults.take_graph_failure(continuation)
            if failure is not None:
                raise GraphError(
                    failure.status,
                    "ServiceUnavailable" if failure.status == 503 else "GatewayTimeout",
                    "The service is temporarily unavailable.",
                    [("Retry-After", "1")],
                )
            return self._route(request, target)
        finally:
            self._leave(target.mailbox)

    # ----- who and how ------------------------------------------------

    def _target(self, request: Request, grant: Grant) -> _Target:
        parts = [unquote(p) for p in request.path.split("/")[2:]]
        if parts[:1] == ["me"]:
            if grant.mailbox is None:
                raise GraphError(
                    400,
                    "BadRequest",
                    "/me request is only valid with delegated authentication flow.",
                )
            mailbox, prefix, rest = grant.mailbox, "me", parts[1:]
        elif parts[:1] == ["users"] and len(parts) >= 2:
            mailbox, prefix, rest = (
                parts[1],
                f"users/{quote(parts[1], safe='@')}",
                parts[2:],
            )
            if grant.mailbox is not None and grant.mailbox.lower() != mailbox.lower():
                raise GraphError(403, "ErrorAccessDenied", "Access is denied.")
        else:
            raise GraphError(
                400, "BadRequest", f"Resource not found for {request.path}"
            )
        if not self._sim.has_mailbox(mailbox):
            raise GraphError(
                404, "ErrorInvalidUser", f"The requested user '{mailbox}' is invalid."
            )
        prefer = _prefer(request.header("prefer"))
        page_size = _int(
            prefer.get("odata.maxpagesize"), self._sim.scenario.settings.page_size
        )
        return _Target(
            mailbox=mailbox.lower(),
            prefix=prefix,
            rest=rest,
            immutable=prefer.get("idtype", "").strip('"').lower() == "immutableid",
            page_size=max(1, page_size),
            base_url=request.base_url,
        )

    def _throttle(self, mailbox: str) -> None:
        faults = self._sim.faults
        injected = faults.take_graph_throttle(mailbox)
        if injected is not None:
            self._sim.update_stats(_count_throttled)
            raise _throttled(
                injected.retry_after,
                "Application is over its MailboxConcurrency limit.",
            )
        now = time.monotonic()
        with self._lock:
            recent = self._recent[mailbox]
            while recent and recent[0] < now - faults.graph_budget_period:
                recent.popleft()
            if len(recent) >= faults.graph_request_budget:
                wait = recent[0] + faults.graph_budget_period - now
                self._sim.update_stats(_count_throttled)
                raise _throttled(
                    max(1, int(wait) + 1),
                    "Application is over its MailboxRequests limit.",
                )
            recent.append(now)

    def _enter(self, mailbox: str) -> None:
        limit = self._sim.faults.graph_concurrency_limit
        with self._lock:
            attempted = self._in_flight[mailbox] + 1
            over = attempted > limit
            if not over:
                self._in_flight[mailbox] = attempted

        def record(stats: Any) -> None:
            stats.max_concurrent[mailbox] = max(
                stats.max_concurrent.get(mailbox, 0), attempted
            )
            if over:
                stats.throttled += 1

        self._sim.update_stats(record)
        if over:
            raise _throttled(1, "Application is over its MailboxConcurrency limit.")

    def _leave(self, mailbox: str) -> None:
        with self._lock:
            self._in_flight[mailbox] -= 1

    # ----- routes -----------------------------------------------------

    def _route(self, request: Request, target: _Target) -> Response:
        # A function may be called with or without parentheses: delta, delta().
        rest = [r.removesuffix("()") for r in target.rest]
        if request.method != "GET":
            raise GraphError(405, "ErrorInvalidRequest", "Method not allowed here.")
        if [r.lower() for r in rest] == ["calendarview", "delta"]:
            return self._delta(request, target)
        if [r.lower() for r in rest] == ["calendarview"]:
            return self._view(request, target)
        if len(rest) == 2 and rest[0] == "events":
            return self._event(target, rest[1])
        raise GraphError(400, "BadRequest", f"Resource not found for {request.path}")

    def _event(self, target: _Target, event_id: str) -> Response:
        calendar = self._sim.calendar(target.mailbox)
        try:
            event = calendar.get(event_id)
        except EventNotFound:
            raise GraphError(
                404,
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
            ) from None
        body = {
            "@odata.context": f"{target.base_url}/v1.0/$metadata#users"
            f"('{target.mailbox}')/events/$entity",
            **event,
        }
        return json_response(200, _ids(body, calendar, target.immutable))

    def _view(self, request: Request, target: _Target) -> Response:
        """Plain calendarView: the whole window, paged with ``$skip``.

        Every item carries its full values (occurrences included).  The page
        size is ``$top``, else ``Prefer: odata.maxpagesize``, else the
        scenario's ``page_size`` (Graph's own default is 10).
        """
        query = request.query
        start = _window_param(query, "startDateTime")
        end = _window_param(query, "endDateTime")
        calendar = self._sim.calendar(target.mailbox)
        items = calendar.view(start, end)
        skip = max(0, _int(query.get("$skip"), 0))
        size = max(1, _int(query.get("$top"), target.page_size))
        body: JSON = {
            "@odata.context": f"{target.base_url}/v1.0/$metadata#Collection(event)",
            "value": [
                _ids(item, calendar, target.immutable)
                for item in items[skip : skip + size]
            ],
        }
        if skip + size < len(items):
            following = {**query, "$skip": str(skip + size)}
            body["@odata.nextLink"] = (
                f"{target.base_url}/v1.0/{target.prefix}/calendarView?"
                + urlencode(following, safe="$:")
            )
        return json_response(200, body)

    def _delta(self, request: Request, target: _Target) -> Response:
        query = request.query
        forbidden = [p for p in _FORBIDDEN_ON_DELTA if p in query]
        if forbidden:
            raise GraphError(
                400,
                "ErrorInvalidUrlQuery",
                "The following parameters "
                "are not supported with change tracking over the "
                f"'CalendarView' resource: '{', '.join(forbidden)}'.",
            )
        if "$skiptoken" in query:
            round_, position = self._page_state(query["$skiptoken"], target)
        elif "$deltatoken" in query:
            round_ = self._round_from_delta(query["$deltatoken"], target)
            position = -round_.empty_pages
        else:
            round_ = self._new_round(query, target)
            position = -round_.empty_pages
        return self._page(round_, position, target)

    def _new_round(self, query: dict[str, str], target: _Target) -> _Round:
        start = _window_param(query, "startDateTime")
        end = _window_param(query, "endDateTime")
        if end <= start:
            raise GraphError(
                400, "ErrorInvalidParameter", "endDateTime must be after startDateTime."
            )
        return self._cut_round(target.mailbox, start, end, None)

    def _round_from_delta(self, token: str, target: _Target) -> _Round:
        with self._lock:
            state = self._deltas.get(token)
        self._check_state(state, target.mailbox)
        assert state is not None
        return self._cut_round(state.mailbox, state.start, state.end, state.watermark)

    def _cut_round(
        self, mailbox: str, start: datetime, end: datetime, since: int | None
    ) -> _Round:
        items, watermark = self._sim.calendar(mailbox).delta(start, end, since)
        if self._sim.faults.delta_duplicates:
            items = items + [items[i] for i in range(3, len(items), 7)]
        return _Round(
            mailbox=mailbox,
            start=start,
            end=end,
            items=items,
            watermark=watermark,
            epoch=self._sim.faults.delta_epochs[mailbox],
            empty_pages=self._sim.faults.delta_empty_pages,
        )

    def _page_state(self, token: str, target: _Target) -> tuple[_Round, int]:
        with self._lock:
            state = self._pages.get(token)
        self._check_state(state[0] if state else None, target.mailbox)
        assert state is not None
        return state

    def _check_state(self, state: _Round | _DeltaState | None, mailbox: str) -> None:
        current = self._sim.faults.delta_epochs[mailbox]
        if state is None or state.epoch != current or state.mailbox != mailbox:
            code = self._sim.faults.expired_code(mailbox)
            raise GraphError(
                410,
                code,
                "The sync state generation is not found or "
                "has expired; a full resync is required.",
            )

    def _page(self, round_: _Round, position: int, target: _Target) -> Response:
        calendar = self._sim.calendar(round_.mailbox)
        body: JSON = {
            "@odata.context": f"{target.base_url}/v1.0/$metadata#Collection(event)"
        }
        if position < 0:  # one of the round's empty pages
            value: list[JSON] = []
            following = position + 1
        else:
            size = target.page_size + self._sim.faults.page_size_extra
            value = round_.items[position : position + size]
            following = position + size
        base = f"{target.base_url}/v1.0/{target.prefix}/calendarView/delta"
        if following < len(round_.items):
            body["@odata.nextLink"] = (
                f"{base}?$skiptoken={self._page_token(round_, following)}"
            )
        else:
            body["@odata.deltaLink"] = f"{base}?$deltatoken={self._delta_token(round_)}"
        body["value"] = [_ids(item, calendar, target.immutable) for item in value]
        return json_response(200, body)

    def _page_token(self, round_: _Round, position: int) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._pages[token] = (round_, position)
        return token

    def _delta_token(self, round_: _Round) -> str:
        with self._lock:
            if not round_.delta_token:
                round_.delta_token = secrets.token_urlsafe(24)
                self._deltas[round_.delta_token] = _DeltaState(
                    round_.mailbox,
                    round_.start,
                    round_.end,
                    round_.watermark,
                    round_.epoch,
                )
            return round_.delta_token


def _kind(path: str) -> str:
    lowered = path.lower()
    if lowered.endswith("/calendarview/delta"):
        return "delta"
    if lowered.endswith("/calendarview"):
        return "view"
    if "/events/" in lowered:
        return "event"
    return "other"


def _prefer(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = value.strip()
    return out


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _window_param(query: dict[str, str], name: str) -> datetime:
    raw = query.get(name)
    if raw is None:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            f"This request requires a time window specified by the query "
            f"string parameters StartDateTime and EndDateTime; {name} "
            "is missing.",
        )
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            f"The value of {name} is not a valid date and time.",
        ) from None
    if moment.tzinfo is None:
        raise GraphError(
            400, "ErrorInvalidParameter", f"{name} needs a time zone offset or Z."
        )
    return moment


def _ids(item: JSON, calendar: Calendar, immutable: bool) -> JSON:
    if immutable:
        return item
    converted = dict(item)
    for key in ("id", "seriesMasterId"):
        if converted.get(key):
            converted[key] = calendar.default_id(converted[key])
    return converted


def _throttled(retry_after: RetryAfter, message: str) -> GraphError:
    return GraphError(
        429, "ApplicationThrottled", message, retry_after_header(retry_after)
    )


def _count_without_immutable(stats: Any) -> None:
    stats.without_immutable_id += 1


def _count_throttled(stats: Any) -> None:
    stats.throttled += 1
