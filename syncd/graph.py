"""Microsoft Graph calendar source: calendarView delta rounds, one mailbox each.

msgraph-sdk builds every request (its request builders for a new round and
for one event, ``with_url`` for the links Graph hands back) and carries the
auth provider, which attaches msal's token for the mailbox being read, and
only to ``graph.base_url``.  Requests go through msgraph-core's httpx client
(its Graph middleware: user agent, telemetry) with the SDK's own retry and
redirect handlers left out: syncd retries in one place,
:func:`syncd.http.retry_idempotent`.  Response bodies are read as raw JSON
into :mod:`syncd.model` (the SDK's model deserialisation costs milliseconds
per event).  msgraph is imported only when the first request is made, inside
the event loop that uses the client.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import structlog

from syncd.auth import TokenProvider
from syncd.errors import (
    AuthError,
    DeltaExpired,
    PermanentError,
    ThrottledError,
    TransientError,
)
from syncd.http import (
    HttpSettings,
    Limiter,
    Sleep,
    deadline,
    httpx_limits,
    httpx_timeout,
    odata_error,
    origin,
    parse_retry_after,
    retry_idempotent,
    ssl_context,
    transport_error,
)
from syncd.metrics import GRAPH_REQUESTS, THROTTLES
from syncd.model import DeltaItem, DeltaPage, Event, EventType, Removed, Window

log = structlog.get_logger(__name__)

Build = Callable[[Any], Any]
"""Makes the SDK's RequestInformation of a GET, given the request adapter."""

_MAILBOX: ContextVar[str] = ContextVar("syncd_graph_mailbox")
"""The mailbox whose request the auth provider is authorising."""

DEFAULT_PAGE_SIZE = 50
DEFAULT_MAX_PAGES = 1000
DEFAULT_ROUND_BUDGET = 600.0
SYNC_STATE_CODES = frozenset({"syncstatenotfound", "resyncrequired"})
FIX_ACCESS_POLICY = "check the application access policy for this mailbox"

Mode = Literal["app", "delegated"]
ME_PLACEHOLDER = "me-token-to-replace"  # msgraph-sdk's user id standing for /me

# Windows time zone names Graph may use, mapped to IANA (CLDR's "001" zones).
WINDOWS_ZONES: Mapping[str, str] = {
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "Romance Standard Time": "Europe/Paris",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kiev",
    "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow",
    "Turkey Standard Time": "Europe/Istanbul",
    "Israel Standard Time": "Asia/Jerusalem",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Kolkata",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles",
    "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Atlantic Standard Time": "America/Halifax",
    "E. South America Standard Time": "America/Sao_Paulo",
    "Argentina Standard Time": "America/Buenos_Aires",
    "Mexico Standard Time": "America/Mexico_City",
}


class MalformedItem(ValueError):
    """A delta item that cannot be read as an event."""


class GraphCalendar:
    """:class:`syncd.ports.CalendarSource` over Microsoft Graph.

    ``mode="app"`` reads ``/users/{mailbox}`` with an app-only token,
    ``"delegated"`` reads ``/me`` with the signed-in user's token.
    ``transport`` replaces the network (tests); ``clock`` (monotonic seconds)
    and ``sleep`` drive the guards and backoff.
    """

    def __init__(
        self,
        base_url: str,
        auth: TokenProvider,
        *,
        mode: Mode = "app",
        page_size: int = DEFAULT_PAGE_SIZE,
        settings: HttpSettings | None = None,
        ca_bundle: Path | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        round_budget: float = DEFAULT_ROUND_BUDGET,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._origin = origin(httpx.URL(self._base_url))
        self._auth = auth
        self._mode = mode
        self._prefer = f'IdType="ImmutableId", odata.maxpagesize={page_size}'
        self._settings = settings or HttpSettings()
        self._ca_bundle = ca_bundle
        self._max_pages = max_pages
        self._round_budget = round_budget
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._client: httpx.AsyncClient | None = None
        self._adapter: Any = None
        self._limiter: Limiter | None = None
        self.requests: dict[str, int] = {}

    def request_count(self, mailbox: str) -> int:
        """Requests sent for ``mailbox`` so far (retries included)."""
        return self.requests.get(mailbox, 0)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- the CalendarSource seam -----------------------------------------

    async def delta_round(
        self, mailbox: str, window: Window, delta_link: str | None
    ) -> AsyncIterator[DeltaPage]:
        """Every page of a round: ``delta_link`` continued, or a new round."""
        if delta_link is not None and not self._on_graph(delta_link):
            # Stored while graph.base_url pointed elsewhere: never sent there.
            raise DeltaExpired("the stored delta link is not on graph.base_url",
                               user=mailbox)
        current = delta_link  # the link being read; None for a new round's start
        started, pages = self._clock(), 0
        while True:
            self._check_guards(mailbox, started, pages)
            build = (partial(self._link_request, current) if current
                     else partial(self._round_request, mailbox, window))
            body = await self._get_json(mailbox, build)
            assert body is not None
            page = parse_page(body, mailbox=mailbox)
            pages += 1
            if page.delta_link is None and page.next_link is None:
                raise TransientError("delta page carries no next or delta link",
                                     method="GET", url=current, user=mailbox)
            for link in (page.next_link, page.delta_link):
                if link is not None and not self._on_graph(link):
                    raise PermanentError(
                        "Graph sent a paging link to another host; "
                        "refusing to follow it", method="GET", url=current,
                        user=mailbox)
            if page.next_link is not None and page.next_link == current:
                raise TransientError("paging loop: the same next link twice",
                                     method="GET", url=current, user=mailbox)

            yield page
            if page.next_link is None:
                return
            current = page.next_link

    async def get_event(self, mailbox: str, event_id: str) -> Event | None:
        """The event as Graph has it now; ``None`` when it is gone (404)."""
        body = await self._get_json(
            mailbox, partial(self._event_request, mailbox, event_id), missing_ok=True)
        if body is None:
            return None
        return parse_event(body)

    def _on_graph(self, link: str) -> bool:
        """Whether a link Graph gave points back at graph.base_url."""
        try:
            return origin(httpx.URL(link)) == self._origin
        except httpx.InvalidURL:
            return False

    # -- requests, built by msgraph-sdk --------------------------------------

    def _round_request(self, mailbox: str, window: Window, adapter: Any) -> Any:
        """A new round: ``calendarView/delta`` of the window."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import (  # noqa: E501
            DeltaRequestBuilder,
        )

        builder = DeltaRequestBuilder(adapter, self._user_path(mailbox))
        params = window_params(window)
        query = builder.DeltaRequestBuilderGetQueryParameters(
            start_date_time=params["startDateTime"],
            end_date_time=params["endDateTime"])
        return self._prefer_ids(builder.to_get_request_information(
            RequestConfiguration(query_parameters=query)))

    def _link_request(self, link: str, adapter: Any) -> Any:
        """A page of a round: the link Graph gave, replayed verbatim."""
        from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import (  # noqa: E501
            DeltaRequestBuilder,
        )

        return self._prefer_ids(
            DeltaRequestBuilder(adapter, link).to_get_request_information())

    def _event_request(self, mailbox: str, event_id: str, adapter: Any) -> Any:
        """One event, by its (immutable) id."""
        from msgraph.generated.users.item.events.item.event_item_request_builder import (  # noqa: E501
            EventItemRequestBuilder,
        )

        path = {**self._user_path(mailbox), "event%2Did": event_id}
        return self._prefer_ids(
            EventItemRequestBuilder(adapter, path).to_get_request_information())

    def _user_path(self, mailbox: str) -> dict[str, Any]:
        """Path parameters of ``/users/{mailbox}``; of ``/me`` when delegated
        (the SDK's placeholder, which its URL replace handler turns into
        ``/me``)."""
        user = ME_PLACEHOLDER if self._mode == "delegated" else mailbox
        return {"baseurl": self._base_url, "user%2Did": user}

    def _prefer_ids(self, info: Any) -> Any:
        info.headers.add("Prefer", self._prefer)
        return info

    def _check_guards(self, mailbox: str, started: float, pages: int) -> None:
        if pages >= self._max_pages:
            raise TransientError(f"paging loop: more than {self._max_pages} pages",
                                 user=mailbox)
        if self._clock() - started > self._round_budget:
            raise TransientError(
                f"delta round over its time budget of {self._round_budget:g}s",
                user=mailbox)

    async def _get_json(self, mailbox: str, build: Build, *,
                        missing_ok: bool = False) -> dict[str, Any] | None:
        """GET with retries of transient failures; ``None`` for 404 if allowed."""

        async def attempt() -> dict[str, Any] | None:
            return await self._get_authorized(mailbox, build, missing_ok)

        return await retry_idempotent(
            attempt, self._settings, what="graph_get", sleep=self._sleep,
            rng=self._rng, mailbox=mailbox)

    async def _get_authorized(self, mailbox: str, build: Build,
                              missing_ok: bool) -> dict[str, Any] | None:
        """One GET; a 401 drops the token and tries once more with a new one."""
        response = await self._send(mailbox, build)
        if response.status_code == 401:
            log.warning("graph_unauthorized", mailbox=mailbox, retry=True)
            sent = response.request.headers.get("Authorization", "")
            self._auth.invalidate(sent.removeprefix("Bearer "))
            response = await self._send(mailbox, build)
        return self._read(mailbox, response, missing_ok)

    async def _send(self, mailbox: str, build: Build) -> httpx.Response:
        """The request ``build`` makes, authorised for ``mailbox`` and sent."""
        client, adapter, limiter = await self._ensure_client()
        reading = _MAILBOX.set(mailbox)
        try:
            request: httpx.Request = await adapter.convert_to_native_async(
                build(adapter))
        finally:
            _MAILBOX.reset(reading)
        url = str(request.url)
        async with limiter.slot(mailbox):
            self.requests[mailbox] = self.requests.get(mailbox, 0) + 1
            try:
                async with deadline(self._settings.total_timeout, what="graph",
                                    method="GET", url=url):
                    response = await client.send(request)
            except httpx.TransportError as exc:
                GRAPH_REQUESTS.labels(status="error").inc()
                raise transport_error(exc, what="graph", method="GET", url=url) from exc
        GRAPH_REQUESTS.labels(status=str(response.status_code)).inc()
        return response

    def _read(self, mailbox: str, response: httpx.Response,
              missing_ok: bool) -> dict[str, Any] | None:
        status = response.status_code
        if status == 200:
            return _json_object(response, mailbox)
        if status == 404 and missing_ok:
            return None
        raise classify(response, mailbox=mailbox)

    async def _ensure_client(self) -> tuple[httpx.AsyncClient, Any, Limiter]:
        if self._client is None or self._adapter is None or self._limiter is None:
            self._client = self._build_client()
            self._adapter = self._build_adapter(self._client)
            self._limiter = Limiter.from_settings(self._settings)
        return self._client, self._adapter, self._limiter

    def _build_client(self) -> httpx.AsyncClient:
        """msgraph-core's client, without the SDK retry and redirect handlers."""
        from kiota_http.middleware import UrlReplaceHandler, UserAgentHandler
        from kiota_http.middleware.options import UrlReplaceHandlerOption
        from msgraph_core import GraphClientFactory  # type: ignore[import-untyped, unused-ignore]
        from msgraph_core.middleware import (  # type: ignore[import-untyped, unused-ignore]
            GraphTelemetryHandler,
        )

        client = httpx.AsyncClient(
            verify=ssl_context(self._ca_bundle), timeout=httpx_timeout(self._settings),
            limits=httpx_limits(self._settings), transport=self._transport,
            follow_redirects=False)
        middleware = [UserAgentHandler(), GraphTelemetryHandler()]
        if self._mode == "delegated":
            me = UrlReplaceHandlerOption(
                replacement_pairs={f"/users/{ME_PLACEHOLDER}": "/me"})
            middleware.insert(0, UrlReplaceHandler(me))
        graph_client: httpx.AsyncClient = (
            GraphClientFactory.create_with_custom_middleware(
                middleware=middleware, client=client))
        return graph_client

    def _build_adapter(self, client: httpx.AsyncClient) -> Any:
        """The SDK's request adapter: builds requests and authorises them."""
        from kiota_abstractions.authentication import (
            BaseBearerTokenAuthenticationProvider,
        )
        from msgraph.graph_request_adapter import GraphRequestAdapter

        tokens = _msal_tokens(self._auth, self._base_url, self._origin)
        adapter = GraphRequestAdapter(
            BaseBearerTokenAuthenticationProvider(tokens), client=client)
        adapter.base_url = self._base_url
        return adapter


def _msal_tokens(auth: TokenProvider, base_url: str,
                 base_origin: tuple[str, str, int | None]) -> Any:
    """The auth provider's token source: msal's token for the mailbox whose
    request is being built, and only for a request to ``graph.base_url`` (a
    link that points elsewhere gets none)."""
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
    )

    class MsalTokens(AccessTokenProvider):
        def __init__(self) -> None:
            self._hosts = AllowedHostsValidator([httpx.URL(base_url).host])

        async def get_authorization_token(
            self, uri: str,
            additional_authentication_context: dict[str, Any] | None = None,
        ) -> str:
            if origin(httpx.URL(uri)) != base_origin:
                return ""
            return await auth.get_token(_MAILBOX.get())

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return self._hosts

    return MsalTokens()


def classify(response: httpx.Response, *, mailbox: str) -> Exception:
    """The error for a non-success Graph response."""
    status = response.status_code
    code, _ = odata_error(response)
    url, retry_after = str(response.request.url), _retry_after(response)
    context: dict[str, Any] = {"method": "GET", "url": url, "status": status,
                               "code": code, "user": mailbox}
    if status == 410 or (code or "").casefold() in SYNC_STATE_CODES:
        log.info("graph_delta_expired", mailbox=mailbox, code=code)
        return DeltaExpired("Graph no longer knows the delta link", **context)
    if status == 429 or (status == 503 and retry_after is not None):
        THROTTLES.labels(service="graph").inc()
        log.warning("graph_throttled", mailbox=mailbox, status=status,
                    retry_after=retry_after, code=code)
        return ThrottledError("Graph throttled the mailbox", retry_after=retry_after,
                              **context)
    if status in (408, 500, 502, 503, 504):
        return TransientError("Graph is unavailable", retry_after=retry_after,
                              **context)
    if status == 401:
        return AuthError("Graph rejected a fresh token", **context)
    if status == 403:
        return AuthError(f"Graph denied access to the mailbox: {FIX_ACCESS_POLICY}",
                         **context)
    return PermanentError("Graph refused the request", **context)


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))


def _json_object(response: httpx.Response, mailbox: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TransientError("Graph answered with a body that is not a JSON object",
                             method="GET", url=str(response.request.url),
                             status=response.status_code, user=mailbox)
    return body


def window_params(window: Window) -> dict[str, str]:
    """``startDateTime``/``endDateTime`` of a calendarView, in UTC with ``Z``."""
    return {"startDateTime": _utc_z(window.start), "endDateTime": _utc_z(window.end)}


def _utc_z(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- parsing ---------------------------------------------------------------


def parse_page(body: Mapping[str, Any], *, mailbox: str | None = None) -> DeltaPage:
    """A delta page; malformed items are logged and skipped, never fatal."""
    values = body.get("value")
    if not isinstance(values, list):
        raise TransientError("delta page without a value list", user=mailbox)

    items = [item for raw in values
             if (item := _parse_item(raw, mailbox)) is not None]
    return DeltaPage(items=items, next_link=_link(body, "@odata.nextLink"),
                     delta_link=_link(body, "@odata.deltaLink"))


def _link(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and value else None


def _parse_item(raw: object, mailbox: str | None) -> DeltaItem | None:
    event_id = raw.get("id") if isinstance(raw, dict) else None
    try:
        if not isinstance(raw, dict):
            raise MalformedItem("not an object")
        if "@removed" in raw:
            return parse_removed(raw)
        return parse_event(raw)
    except (MalformedItem, KeyError, TypeError, ValueError) as exc:
        log.warning("graph_event_malformed", mailbox=mailbox, event_id=event_id,
                    error=str(exc))
        return None


def parse_removed(raw: Mapping[str, Any]) -> Removed:
    """Graph's ``{"id": ..., "@removed": {"reason": ...}}``."""
    removed = raw.get("@removed")
    reason = removed.get("reason") if isinstance(removed, dict) else None
    return Removed(id=_required_str(raw, "id"), reason=reason or "deleted")


def parse_event(raw: Mapping[str, Any]) -> Event:
    """One Graph event resource as a :class:`syncd.model.Event`.

    Fields the item does not carry (an occurrence carries only its id, type,
    series master and times) stay ``None`` for the engine to inherit.
    """
    is_all_day = raw.get("isAllDay")
    if is_all_day is not None and not isinstance(is_all_day, bool):
        raise MalformedItem("isAllDay is not a boolean")
    fields: dict[str, Any] = {
        "id": _required_str(raw, "id"),
        "type": EventType(raw.get("type") or EventType.SINGLE),
        "start": parse_bound(raw.get("start"), all_day=bool(is_all_day)),
        "end": parse_bound(raw.get("end"), all_day=bool(is_all_day)),
        "is_all_day": is_all_day,
        "series_master_id": _optional_str(raw, "seriesMasterId"),
        "subject": _optional_str(raw, "subject"),
        "categories": _strings(raw.get("categories")),
        "sensitivity": _optional_str(raw, "sensitivity"),
        "show_as": _optional_str(raw, "showAs"),
        "response": _nested_str(raw, "responseStatus", "response"),
        "is_cancelled": _optional_bool(raw, "isCancelled"),
        "organizer": _address(raw.get("organizer")),
        "attendees": _attendees(raw.get("attendees")),
        "location": _nested_str(raw, "location", "displayName"),
        "start_zone": _optional_str(raw, "originalStartTimeZone"),
    }
    return Event(**fields)


def parse_bound(value: object, *, all_day: bool) -> datetime | date:
    """Graph's ``{"dateTime", "timeZone"}``: aware UTC, or a date when all-day.

    All-day bounds are calendar dates and are never converted between zones.
    """
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise MalformedItem("start or end without a dateTime")

    local = datetime.fromisoformat(value["dateTime"])
    if all_day:
        return local.date()
    if local.tzinfo is not None:
        return local.astimezone(UTC)
    return local.replace(tzinfo=zone(value.get("timeZone"))).astimezone(UTC)


def zone(name: object) -> ZoneInfo:
    """The zone for a Graph ``timeZone``: IANA or Windows name; UTC if unknown."""
    if not isinstance(name, str) or not name or name.upper() == "UTC":
        return ZoneInfo("UTC")

    iana = WINDOWS_ZONES.get(name, name)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        log.warning("graph_unknown_timezone", timezone=name)
        return ZoneInfo("UTC")


def _required_str(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedItem(f"{key} missing")
    return value


def _optional_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


def _optional_bool(raw: Mapping[str, Any], key: str) -> bool | None:
    value = raw.get(key)
    return value if isinstance(value, bool) else None


def _nested_str(raw: Mapping[str, Any], outer: str, inner: str) -> str | None:
    value = raw.get(outer)
    return _optional_str(value, inner) if isinstance(value, dict) else None


def _strings(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(v for v in value if isinstance(v, str))


def _address(value: object) -> str | None:
    """The lower-cased address of an ``{"emailAddress": {"address"}}``."""
    if not isinstance(value, dict):
        return None
    address = _nested_str(value, "emailAddress", "address")
    return address.lower() if address else None


def _attendees(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(a for a in map(_address, value) if a)
