"""InLoox time-entry target: an httpx client for the InLoox OData API.

Implements :class:`syncd.ports.TimeEntryTarget`.  Reads (GET) and the
idempotent writes (PATCH with absolute values, DELETE) are retried through the
shared retry helper; ``CreateTimeEntryFromGraphEvent`` is sent exactly once by
every layer, and a create whose answer was lost raises ``OutcomeUnknown`` so
the caller looks the entry up before anything is sent again.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import structlog

from syncd import metrics
from syncd.errors import (
    AuthError,
    BilledLocked,
    HttpError,
    OutcomeUnknown,
    PermanentError,
    ThrottledError,
    TransientError,
)
from syncd.http import (
    HttpSettings,
    httpx_limits,
    httpx_timeout,
    odata_error,
    parse_retry_after,
    retry_idempotent,
    same_origin,
    ssl_context,
    transport_error,
)
from syncd.model import TimeEntry
from syncd.ports import UNCHANGED, Unchanged

__all__ = ["InLooxClient", "datetime_literal", "guid_literal", "string_literal"]

log = structlog.get_logger(__name__)

PROJECT_MISS_TTL = 300.0
"""Seconds a project name that did not resolve is remembered as missing."""

_CREATE_PATH = "TimeEntry/CreateTimeEntryFromGraphEvent"
_AUTH_ADVICE = "InLoox rejected the credentials; check inloox.api_key (or inloox.token)"
_BILLED = "TimeEntryBilled"

# Raised before a byte of the request left: always safe to send again.
_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def guid_literal(value: str) -> str:
    """``value`` as an unquoted OData guid literal; never anything else."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError) as exc:
        raise PermanentError(f"not an InLoox id: {value!r}", code="InvalidId") from exc


def string_literal(value: str) -> str:
    """``value`` as a quoted OData string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def datetime_literal(value: datetime) -> str:
    """An aware instant as an unquoted OData literal in UTC with ``Z``."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: InLoox needs an instant")
    utc = value.astimezone(UTC).replace(tzinfo=None)
    spec = "seconds" if utc.microsecond == 0 else "microseconds"
    return utc.isoformat(timespec=spec) + "Z"


class InLooxClient:
    """One InLoox account (its api key or token) as a :class:`TimeEntryTarget`."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        ca_bundle: Path | None = None,
        settings: HttpSettings | None = None,
        concurrency: int | None = None,
        limit: asyncio.Semaphore | None = None,
        performer_id: str | None = None,
        user: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if (api_key is None) == (token is None):
            raise ValueError("InLooxClient needs exactly one of api_key or token")
        self.base_url = base_url.rstrip("/")
        self.settings = settings or HttpSettings()
        self.performer_id = performer_id
        self.user = user
        self.requests = 0
        self._clock = clock
        self._now = now
        self._sleep = sleep
        # One semaphore may be shared by the clients of every user's key.
        self._limit = limit or asyncio.Semaphore(
            concurrency or self.settings.max_concurrency
        )
        self._projects: dict[str, str] = {}
        self._project_misses: dict[str, float] = {}
        self._http = httpx.AsyncClient(
            headers=_auth_headers(api_key, token),
            timeout=httpx_timeout(self.settings),
            transport=transport or _transport(ca_bundle, self.settings),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> InLooxClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the create: sent once, never retried --------------------------------

    async def create_from_event(
        self,
        *,
        mailbox: str,
        event_id: str,
        project_id: str,
        task_id: str | None,
        tag_event: bool,
    ) -> TimeEntry | None:
        """Book the event; the created entry, or ``None`` on an empty success."""
        body = {
            "eventId": event_id,
            "mailbox": mailbox,
            "projectId": project_id,
            "taskItemId": task_id,
            "tagEvent": tag_event,
        }
        request = self._http.build_request(
            "POST", _create_url(self.base_url), json=body
        )
        response = await self._send(
            request, "create", idempotent=False, user=mailbox, event_id=event_id
        )
        entry = _created_entry(response)
        if entry is not None and entry.performer_id and self.performer_id is None:
            self.performer_id = entry.performer_id
        return entry

    # -- reads ----------------------------------------------------------------

    async def find_entries(
        self, *, project_id: str | None, start: datetime, end: datetime
    ) -> list[TimeEntry]:
        """Entries over exactly ``[start, end]``, of our performer when known."""
        clauses = []
        if project_id is not None:
            clauses.append(f"ProjectId eq {guid_literal(project_id)}")
        clauses.append(f"StartDateTime eq {datetime_literal(start)}")
        clauses.append(f"EndDateTime eq {datetime_literal(end)}")
        if self.performer_id is not None:
            performer = guid_literal(self.performer_id)
            clauses.append(f"PerformedByContactId eq {performer}")
        pages = self._query("TimeEntry", " and ".join(clauses), operation="find")
        return [_entry(item) async for item in pages]

    def list_entries(
        self,
        filter: str | None = None,
        *,
        select: list[str] | None = None,
        orderby: str | None = None,
        top: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Raw TimeEntry entities matching an OData query, every page followed."""
        return self._query(
            "TimeEntry",
            filter,
            select=select,
            orderby=orderby,
            top=top,
            operation="list",
        )

    async def get_entry(self, entry_id: str) -> TimeEntry | None:
        """The entry, or ``None`` when InLoox does not know it."""
        request = self._http.build_request("GET", self._entry_url(entry_id))
        response = await self._send(request, "get", accept_404=True)
        if response.status_code == 404:
            return None
        return _entry(_json_object(response))

    async def learn_performer(self, entry_ids: Callable[[], list[str]]) -> bool:
        """Narrow lookups to the performer of one of our own entries.

        The performer is known once a create answered with its entity; after
        a restart, or when creates answer empty, it is learnt from an entry
        the ledger holds (``entry_ids`` is only asked when needed), so a
        lookup never takes a colleague's entry over the same meeting for
        ours.  A failure to read one only leaves the performer unknown.
        """
        if self.performer_id is not None:
            return True
        for entry_id in entry_ids():
            try:
                entry = await self.get_entry(entry_id)
            except (TransientError, PermanentError) as exc:
                log.info("performer_not_learned", entry_id=entry_id, error=str(exc))
                continue
            if entry is not None and entry.performer_id:
                self.performer_id = entry.performer_id
                return True
        return False

    async def resolve_project(self, name: str) -> str | None:
        """The id of the project with exactly this name, or ``None``."""
        if name in self._projects:
            return self._projects[name]
        missed_at = self._project_misses.get(name)
        if missed_at is not None and self._clock() - missed_at < PROJECT_MISS_TTL:
            return None

        found = await self._find_project(name)
        if found is None:
            self._project_misses[name] = self._clock()
            return None

        self._projects[name] = found
        return found

    # -- idempotent writes ---------------------------------------------------

    async def update_entry(
        self,
        entry_id: str,
        *,
        project_id: str | None = None,
        task_id: str | Unchanged | None = UNCHANGED,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:
        """PATCH only the given fields; ``BilledLocked`` for a billed entry.

        ``task_id=None`` removes the entry's task (``"TaskItemId": null``).
        """
        body = _patch_body(project_id, task_id, start, end)
        if not body:
            return
        request = self._http.build_request(
            "PATCH", self._entry_url(entry_id), json=body
        )
        await self._send(request, "update")

    async def delete_entry(self, entry_id: str) -> None:
        """Delete the entry; gone already is fine; ``BilledLocked`` if billed."""
        request = self._http.build_request("DELETE", self._entry_url(entry_id))
        await self._send(request, "delete", accept_404=True)

    # -- plumbing ------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def _entry_url(self, entry_id: str) -> str:
        return self._url(f"TimeEntry({guid_literal(entry_id)})")

    async def _find_project(self, name: str) -> str | None:
        query = self._query(
            "Project",
            f"Name eq {string_literal(name)}",
            select=["ProjectId", "Name"],
            operation="project",
        )
        ids = [str(item["ProjectId"]) async for item in query]
        if len(ids) > 1:
            raise PermanentError(
                f"{len(ids)} InLoox projects are named {name!r}; use the project id",
                code="AmbiguousProject",
            )
        return ids[0] if ids else None

    async def _query(
        self,
        entity_set: str,
        filter: str | None,
        *,
        select: list[str] | None = None,
        orderby: str | None = None,
        top: int | None = None,
        operation: str,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every entity of every page of one OData query, ``top`` at most."""
        params = _query_params(filter, select, orderby, top)
        url: str | None = self._url(entity_set) + params
        seen = 0
        while url is not None:
            request = self._http.build_request("GET", url)
            page = _json_object(await self._send(request, operation))
            for item in _page_items(page, request):
                yield item
                seen += 1
                if top is not None and seen >= top:
                    return
            url = self._next_link(page, request)

    def _next_link(self, page: Mapping[str, Any], request: httpx.Request) -> str | None:
        """The absolute next link, refused unless it points back at InLoox."""
        link = page.get("@odata.nextLink")
        if link is None:
            return None
        if not same_origin(str(link), self.base_url):
            raise PermanentError(
                "InLoox sent a next link to another host; refusing to follow it",
                method=request.method,
                url=str(request.url),
            )
        return str(link)

    async def _send(
        self,
        request: httpx.Request,
        operation: str,
        *,
        idempotent: bool = True,
        accept_404: bool = False,
        user: str | None = None,
        event_id: str | None = None,
    ) -> httpx.Response:
        """Send through the limit; retried only when ``idempotent``."""
        context = {"user": user or self.user, "event_id": event_id}

        async def attempt() -> httpx.Response:
            return await self._attempt(
                request,
                operation,
                idempotent=idempotent,
                accept_404=accept_404,
                context=context,
            )

        if not idempotent:
            return await attempt()
        return await retry_idempotent(
            attempt,
            self.settings,
            what=f"inloox {operation}",
            sleep=self._sleep,
            operation=operation,
        )

    async def _attempt(
        self,
        request: httpx.Request,
        operation: str,
        *,
        idempotent: bool,
        accept_404: bool,
        context: dict[str, str | None],
    ) -> httpx.Response:
        """One request, its outcome turned into a response or a typed error."""
        async with self._limit:
            started = self._clock()
            self.requests += 1
            try:
                async with asyncio.timeout(self.settings.total_timeout):
                    response = await self._http.send(request)
                    await response.aread()
            except (httpx.TransportError, TimeoutError) as exc:
                self._record(request, operation, type(exc).__name__, started)
                raise _transport_error(exc, request, idempotent, context) from exc
        self._record(request, operation, str(response.status_code), started)
        if response.is_success or (accept_404 and response.status_code == 404):
            return response
        raise self._status_error(response, idempotent, context)

    def _record(
        self, request: httpx.Request, operation: str, status: str, started: float
    ) -> None:
        elapsed_ms = round((self._clock() - started) * 1000, 1)
        metrics.INLOOX_REQUESTS.labels(operation=operation, status=status).inc()
        log.debug(
            "inloox_request",
            method=request.method,
            operation=operation,
            status=status,
            elapsed_ms=elapsed_ms,
        )

    def _status_error(
        self,
        response: httpx.Response,
        idempotent: bool,
        context: dict[str, str | None],
    ) -> HttpError:
        """The typed error for a non-success answer."""
        status = response.status_code
        code, message = _odata_error(response)
        where: dict[str, Any] = {
            "method": response.request.method,
            "url": str(response.request.url),
            "status": status,
            "code": code,
            **context,
        }
        if status in (401, 403):
            return AuthError(_AUTH_ADVICE, **where)
        if status == 429 or (status == 503 and "retry-after" in response.headers):
            metrics.THROTTLES.labels(service="inloox").inc()
            delay = parse_retry_after(response.headers.get("retry-after"), self._now())
            return ThrottledError(
                f"InLoox asked to slow down: {message}", retry_after=delay, **where
            )
        if status == 409 and code == _BILLED:
            return BilledLocked(f"InLoox refused a billed entry: {message}", **where)
        if status >= 500 and status != 503 and not idempotent:
            return OutcomeUnknown(
                f"InLoox failed while creating; the entry may exist: {message}",
                **where,
            )
        if status >= 500 or status == 408:
            return TransientError(f"InLoox is unavailable: {message}", **where)
        return PermanentError(f"InLoox refused the request: {message}", **where)


# -- helpers without state ----------------------------------------------------


def _auth_headers(api_key: str | None, token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if api_key is not None:
        headers["x-api-key"] = api_key
    else:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _transport(
    ca_bundle: Path | None, settings: HttpSettings
) -> httpx.AsyncHTTPTransport:
    """A transport that never retries on its own (``retries=0``)."""
    return httpx.AsyncHTTPTransport(
        verify=ssl_context(ca_bundle), limits=httpx_limits(settings), retries=0
    )


def _transport_error(
    exc: httpx.TransportError | TimeoutError,
    request: httpx.Request,
    idempotent: bool,
    context: dict[str, str | None],
) -> TransientError:
    """No answer: harmless before sending, unknown outcome after it for a create."""
    method, url = request.method, str(request.url)
    if isinstance(exc, httpx.TransportError) and (
        idempotent or isinstance(exc, _NOTHING_SENT)
    ):
        error = transport_error(exc, what="InLoox", method=method, url=url)
        error.user, error.event_id = context["user"], context["event_id"]
        return error
    kind = type(exc).__name__
    if idempotent:
        return TransientError(
            f"InLoox: no answer in time ({kind})",
            method=method,
            url=url,
            user=context["user"],
            event_id=context["event_id"],
        )
    return OutcomeUnknown(
        f"InLoox did not answer after the request was sent ({kind}); "
        "the entry may exist",
        method=method,
        url=url,
        user=context["user"],
        event_id=context["event_id"],
    )


@functools.lru_cache(maxsize=8)
def _create_url(base_url: str) -> httpx.URL:
    """The URL of every create, parsed once per InLoox service, not per booking
    (an ``httpx.URL`` is immutable: every client of the service shares it)."""
    return httpx.URL(f"{base_url}/{_CREATE_PATH}")


def _odata_error(response: httpx.Response) -> tuple[str | None, str]:
    """The OData error code and message, the status phrase when none came."""
    code, message = odata_error(response)
    return code, message or response.reason_phrase or f"HTTP {response.status_code}"


def _query_params(
    filter: str | None,
    select: list[str] | None,
    orderby: str | None,
    top: int | None,
) -> str:
    """The OData query string, spaces as ``%20`` and ``$`` left readable."""
    params: list[tuple[str, str]] = []
    if filter:
        params.append(("$filter", filter))
    if select:
        params.append(("$select", ",".join(select)))
    if orderby:
        params.append(("$orderby", orderby))
    if top is not None:
        params.append(("$top", str(top)))
    if not params:
        return ""
    return "?" + urlencode(params, quote_via=quote, safe="$',:()")


def _page_items(
    page: Mapping[str, Any], request: httpx.Request
) -> list[dict[str, Any]]:
    value = page.get("value")
    if not isinstance(value, list):
        raise PermanentError(
            "InLoox answered a query without a value list",
            method=request.method,
            url=str(request.url),
        )
    return [item for item in value if isinstance(item, dict)]


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        # Most often a proxy's or a maintenance page: tried again later.
        raise TransientError(
            "InLoox answered with something that is not a JSON object",
            method=response.request.method,
            url=str(response.request.url),
            status=response.status_code,
        )
    return body


def _created_entry(response: httpx.Response) -> TimeEntry | None:
    """The entity of a create's answer, or ``None`` for an empty success."""
    if response.status_code == 204 or not response.content.strip():
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("value"), dict):
        body = body["value"]
    if not isinstance(body, dict) or not body.get("TimeEntryId"):
        return None
    return _entry(body)


def _entry(entity: Mapping[str, Any]) -> TimeEntry:
    """A TimeEntry from its OData entity."""
    return TimeEntry(
        id=str(entity["TimeEntryId"]),
        project_id=_optional_str(entity.get("ProjectId")),
        start=_instant(entity["StartDateTime"]),
        end=_instant(entity["EndDateTime"]),
        task_id=_optional_str(entity.get("TaskItemId")),
        is_billed=bool(entity.get("IsBilled", False)),
        performer_id=_optional_str(entity.get("PerformedByContactId")),
        display_name=_optional_str(entity.get("DisplayName")),
    )


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _instant(value: str) -> datetime:
    """An OData instant (``Z`` or offset) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _patch_body(
    project_id: str | None,
    task_id: str | Unchanged | None,
    start: datetime | None,
    end: datetime | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if project_id is not None:
        body["ProjectId"] = project_id
    if task_id is not UNCHANGED:
        body["TaskItemId"] = task_id
    if start is not None:
        body["StartDateTime"] = datetime_literal(start)
    if end is not None:
        body["EndDateTime"] = datetime_literal(end)
    if start is not None and end is not None:
        body["DurationMinutes"] = round((end - start).total_seconds() / 60)
    return body
