"""GraphCalendar over httpx.MockTransport: paging, links, errors, retries, limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from syncd.errors import (
    AuthError,
    DeltaExpired,
    PermanentError,
    ThrottledError,
    TransientError,
)
from syncd.graph import GraphCalendar
from syncd.http import HttpSettings
from syncd.metrics import REGISTRY
from syncd.model import DeltaPage, Event, Removed, Window

BASE = "https://graph.test/v1.0"
ALICE = "alice@contoso.example"
WINDOW = Window(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 29, tzinfo=UTC))
NEXT = f"{BASE}/users/{ALICE}/calendarView/delta?$skiptoken=Zm9v%2Bbar%3D%3D"
DELTA = f"{BASE}/users/{ALICE}/calendarView/delta?$deltatoken=ZGVsdGE%3D"
EVENT = {"id": "ev-1", "type": "singleInstance", "subject": "Review",
         "start": {"dateTime": "2025-01-15T09:00:00.0000000", "timeZone": "UTC"},
         "end": {"dateTime": "2025-01-15T10:00:00.0000000", "timeZone": "UTC"}}
SETTINGS = HttpSettings(max_attempts=3, base_delay=0.5, max_delay=10.0)

Handler = Callable[[httpx.Request], Any]


class Tokens:
    """A token provider that hands out token-0, then token-1 after invalidation."""

    def __init__(self) -> None:
        self.generation = 0
        self.invalidated: list[str] = []

    async def get_token(self, mailbox: str) -> str:
        return f"token-{self.generation}"

    def invalidate(self, token: str) -> None:
        self.invalidated.append(token)
        self.generation += 1


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def script(*responses: httpx.Response, seen: list[httpx.Request]) -> Handler:
    """A handler answering with ``responses`` in order, recording requests."""
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return handler


def page(items: list[Any], *, next_link: str | None = None,
         delta_link: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"@odata.context": "x", "value": items}
    if next_link:
        body["@odata.nextLink"] = next_link
    if delta_link:
        body["@odata.deltaLink"] = delta_link
    return httpx.Response(200, json=body)


def error(status: int, code: str, headers: dict[str, str] | None = None
          ) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": "m"}},
                          headers=headers)


def calendar(handler: Handler, **kwargs: Any) -> tuple[GraphCalendar, Tokens, Sleeps]:
    tokens, sleeps = Tokens(), Sleeps()
    kwargs.setdefault("settings", SETTINGS)
    graph = GraphCalendar(BASE, tokens, transport=httpx.MockTransport(handler),
                          sleep=sleeps, **kwargs)
    return graph, tokens, sleeps


def run_round(graph: GraphCalendar, delta_link: str | None = None,
              mailbox: str = ALICE) -> list[DeltaPage]:
    async def collect() -> list[DeltaPage]:
        try:
            return [p async for p in graph.delta_round(mailbox, WINDOW, delta_link)]
        finally:
            await graph.aclose()

    return asyncio.run(collect())


def test_new_round_sends_window_prefer_and_replays_links_verbatim() -> None:
    """Window in Z, one Prefer header, no $select; next link replayed as given."""
    seen: list[httpx.Request] = []
    graph, _, _ = calendar(script(page([], next_link=NEXT),
                                  page([EVENT], delta_link=DELTA), seen=seen))

    pages = run_round(graph)

    first = seen[0]
    # The SDK's form of the function call: delta(), the mailbox %-encoded.
    assert first.url.raw_path.decode().split("?")[0] == (
        "/v1.0/users/alice%40contoso.example/calendarView/delta()")
    assert dict(first.url.params) == {"startDateTime": "2025-01-01T00:00:00Z",
                                      "endDateTime": "2025-01-29T00:00:00Z"}
    assert first.headers.get_list("Prefer") == [
        'IdType="ImmutableId", odata.maxpagesize=50']
    assert first.headers["Authorization"] == "Bearer token-0"
    assert str(seen[1].url) == NEXT
    assert seen[1].headers["Prefer"] == 'IdType="ImmutableId", odata.maxpagesize=50'
    assert [len(p.items) for p in pages] == [0, 1]
    assert (pages[0].next_link, pages[1].delta_link) == (NEXT, DELTA)
    assert graph.request_count(ALICE) == 2


def test_round_continues_from_the_stored_delta_link() -> None:
    """A stored delta link is requested as-is, without window parameters."""
    seen: list[httpx.Request] = []
    removed = {"id": "ev-9", "@removed": {"reason": "deleted"}}
    graph, _, _ = calendar(script(page([removed], delta_link=DELTA), seen=seen))

    pages = run_round(graph, delta_link=DELTA)

    assert [str(r.url) for r in seen] == [DELTA]
    assert pages[0].items == [Removed("ev-9", "deleted")]


def test_delegated_mode_reads_me_and_page_size_is_configurable() -> None:
    """Delegated mode uses /me; the page size goes into the Prefer header."""
    seen: list[httpx.Request] = []
    graph, _, _ = calendar(script(page([], delta_link=DELTA), seen=seen),
                           mode="delegated", page_size=10)

    run_round(graph)

    assert seen[0].url.path == "/v1.0/me/calendarView/delta()"
    assert seen[0].headers["Prefer"] == 'IdType="ImmutableId", odata.maxpagesize=10'


@pytest.mark.parametrize("code", ["SyncStateNotFound", "syncStateNotFound",
                                  "resyncRequired", "RESYNCREQUIRED"])
def test_gone_delta_link_raises_delta_expired(code: str) -> None:
    """410 with any spelling of the sync-state codes means: start a new round."""
    graph, _, _ = calendar(script(error(410, code), seen=[]))

    with pytest.raises(DeltaExpired) as caught:
        run_round(graph, delta_link=DELTA)

    assert caught.value.code == code
    assert "deltatoken" not in str(caught.value)


@pytest.mark.parametrize(
    ("header", "expected"),
    [({"Retry-After": "120"}, 120.0), ({"Retry-After": "90.5"}, 90.5),
     ({"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}, None)],
)
def test_throttled_with_long_retry_after_goes_to_the_caller(
    header: dict[str, str], expected: float | None,
) -> None:
    """429 asking for more than max_delay: ThrottledError with the server's hint."""
    seen: list[httpx.Request] = []
    graph, _, sleeps = calendar(script(error(429, "ApplicationThrottled", header),
                                       seen=seen))
    before = REGISTRY.get_sample_value("syncd_throttled_total",
                                       {"service": "graph"}) or 0.0

    with pytest.raises(ThrottledError) as caught:
        run_round(graph)

    assert len(seen) == 1 and sleeps.delays == []
    if expected is None:
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 86400
    else:
        assert caught.value.retry_after == expected
    assert REGISTRY.get_sample_value("syncd_throttled_total",
                                     {"service": "graph"}) == before + 1


def test_throttled_with_short_retry_after_is_waited_out() -> None:
    """429 with Retry-After 2: the same page is asked again after 2 seconds."""
    seen: list[httpx.Request] = []
    graph, _, sleeps = calendar(script(
        error(429, "ApplicationThrottled", {"Retry-After": "2"}),
        page([EVENT], delta_link=DELTA), seen=seen))

    pages = run_round(graph)

    assert sleeps.delays == [2.0]
    assert seen[0].url == seen[1].url
    assert pages[0].delta_link == DELTA


def test_throttled_without_retry_after_backs_off_then_gives_up() -> None:
    """429 without Retry-After: backoff retries, then ThrottledError without hint."""
    responses = [error(429, "ApplicationThrottled") for _ in range(3)]
    graph, _, sleeps = calendar(script(*responses, seen=[]))

    with pytest.raises(ThrottledError) as caught:
        run_round(graph)

    assert caught.value.retry_after is None
    assert len(sleeps.delays) == 2
    assert all(0 <= d <= 1.0 for d in sleeps.delays)


def test_outage_mid_round_retries_the_same_page() -> None:
    """503/504 on page 2: page 2 is asked again and the round completes."""
    seen: list[httpx.Request] = []
    graph, _, _ = calendar(script(
        page([EVENT], next_link=NEXT), error(503, "ServiceUnavailable"),
        error(504, "GatewayTimeout"), page([], delta_link=DELTA), seen=seen))

    pages = run_round(graph)

    assert [str(r.url) for r in seen[1:]] == [NEXT, NEXT, NEXT]
    assert pages[-1].delta_link == DELTA


def test_lasting_outage_fails_the_round_without_a_delta_link() -> None:
    """503 on every retry: TransientError after the pages already yielded."""
    got: list[DeltaPage] = []
    graph, _, _ = calendar(script(
        page([EVENT], next_link=NEXT),
        *(error(503, "ServiceUnavailable") for _ in range(3)), seen=[]))

    async def collect() -> None:
        async for p in graph.delta_round(ALICE, WINDOW, None):
            got.append(p)

    with pytest.raises(TransientError) as caught:
        asyncio.run(collect())

    assert caught.value.status == 503
    assert [p.delta_link for p in got] == [None]


def test_network_error_is_transient_and_retried() -> None:
    """A dropped connection on a GET is retried like any transient failure."""
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("reset", request=request)
        return page([], delta_link=DELTA)

    graph, _, _ = calendar(handler)

    assert run_round(graph)[0].delta_link == DELTA
    assert len(calls) == 2


def test_unauthorized_forces_one_refresh_and_one_retry() -> None:
    """401 drops the cached token; the retry carries a fresh one."""
    seen: list[httpx.Request] = []
    graph, tokens, _ = calendar(script(
        error(401, "InvalidAuthenticationToken"), page([], delta_link=DELTA),
        seen=seen))

    run_round(graph)

    assert tokens.invalidated == ["token-0"]
    assert [r.headers["Authorization"] for r in seen] == [
        "Bearer token-0", "Bearer token-1"]


def test_second_unauthorized_is_an_auth_error() -> None:
    """A fresh token rejected again: AuthError, no third request."""
    seen: list[httpx.Request] = []
    graph, tokens, _ = calendar(script(
        error(401, "InvalidAuthenticationToken"),
        error(401, "InvalidAuthenticationToken"), seen=seen))

    with pytest.raises(AuthError):
        run_round(graph)

    assert len(seen) == 2
    assert tokens.invalidated == ["token-0"]


def test_forbidden_mailbox_names_the_access_policy() -> None:
    """403: an auth error whose message says what to check."""
    graph, _, _ = calendar(script(error(403, "ErrorAccessDenied"), seen=[]))

    with pytest.raises(AuthError, match="application access policy"):
        run_round(graph)


def test_bad_request_is_permanent() -> None:
    """400 is never retried: a PermanentError with the Graph code."""
    seen: list[httpx.Request] = []
    graph, _, _ = calendar(script(error(400, "ErrorInvalidParameter"), seen=seen))

    with pytest.raises(PermanentError) as caught:
        run_round(graph)

    assert (caught.value.code, len(seen)) == ("ErrorInvalidParameter", 1)


def test_same_next_link_twice_is_a_paging_loop() -> None:
    """A page whose next link is the page just read fails the round."""
    graph, _, _ = calendar(script(page([], next_link=NEXT), page([], next_link=NEXT),
                                  seen=[]))

    with pytest.raises(TransientError, match="paging loop"):
        run_round(graph)


def test_page_count_guard() -> None:
    """More pages than max_pages fails the round."""
    links = [f"{NEXT}{i}" for i in range(5)]
    graph, _, _ = calendar(script(*(page([], next_link=link) for link in links),
                                  seen=[]), max_pages=3)

    with pytest.raises(TransientError, match="more than 3 pages"):
        run_round(graph)


def test_round_time_budget_guard() -> None:
    """A round that runs past its time budget fails before the next page."""
    now = [0.0]

    def handler(request: httpx.Request) -> httpx.Response:
        now[0] += 40.0
        return page([], next_link=f"{NEXT}{now[0]}")

    graph, _, _ = calendar(handler, round_budget=100.0, clock=lambda: now[0])

    with pytest.raises(TransientError, match="time budget"):
        run_round(graph)

    assert now[0] == 120.0


@pytest.mark.parametrize("key", ["next_link", "delta_link"])
def test_link_to_another_host_is_not_followed(key: str) -> None:
    """A paging link off graph.base_url fails the round; nothing is sent there."""
    seen: list[httpx.Request] = []
    foreign = "https://attacker.test/v1.0/users/x/calendarView/delta?$skiptoken=a"
    graph, _, _ = calendar(script(page([EVENT], **{key: foreign}), seen=seen))

    with pytest.raises(PermanentError, match="another host"):
        run_round(graph)

    assert [r.url.host for r in seen] == ["graph.test"]


def test_stored_delta_link_off_the_base_url_starts_a_new_round() -> None:
    """A link stored under an old graph.base_url is never sent: new round."""
    seen: list[httpx.Request] = []
    graph, _, _ = calendar(script(seen=seen))
    old = "https://graph.old.test/v1.0/users/x/calendarView/delta?$deltatoken=a"

    with pytest.raises(DeltaExpired, match=r"graph\.base_url"):
        run_round(graph, delta_link=old)

    assert seen == []


def test_page_without_any_link_fails_the_round() -> None:
    """A page with neither next nor delta link cannot end a round."""
    graph, _, _ = calendar(script(page([EVENT]), seen=[]))

    with pytest.raises(TransientError, match="no next or delta link"):
        run_round(graph)


def test_get_event_found_and_gone() -> None:
    """get_event: the event on 200, None on 404; the id is path-quoted."""
    seen: list[httpx.Request] = []
    graph, _, _ = calendar(script(httpx.Response(200, json=EVENT),
                                  error(404, "ErrorItemNotFound"), seen=seen))

    async def both() -> tuple[Event | None, Event | None]:
        found = await graph.get_event(ALICE, "AAMk/x+y=")
        gone = await graph.get_event(ALICE, "gone")
        await graph.aclose()
        return found, gone

    found, gone = asyncio.run(both())

    assert found is not None and found.id == "ev-1"
    assert gone is None
    assert seen[0].url.raw_path.decode() == (
        "/v1.0/users/alice%40contoso.example/events/AAMk%2Fx%2By%3D")
    assert seen[0].headers["Prefer"].startswith('IdType="ImmutableId"')


def test_per_mailbox_concurrency_is_limited() -> None:
    """At most per_key_concurrency requests in flight for one mailbox."""
    in_flight, peak = [0], [0]

    async def handler(request: httpx.Request) -> httpx.Response:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await asyncio.sleep(0.005)
        in_flight[0] -= 1
        return httpx.Response(200, json=EVENT)

    graph, _, _ = calendar(handler, settings=HttpSettings(per_key_concurrency=4))

    async def many() -> None:
        await asyncio.gather(*(graph.get_event(ALICE, f"e{i}") for i in range(12)))
        await graph.aclose()

    asyncio.run(many())

    assert peak[0] == 4
    assert graph.request_count(ALICE) == 12


def test_requests_are_counted_by_status() -> None:
    """syncd_graph_requests_total grows by status for every response."""
    def count(status: str) -> float:
        value = REGISTRY.get_sample_value("syncd_graph_requests_total",
                                          {"status": status})
        return value or 0.0

    before = (count("200"), count("503"))
    graph, _, _ = calendar(script(error(503, "ServiceUnavailable"),
                                  page([], delta_link=DELTA), seen=[]))

    run_round(graph)

    assert (count("200"), count("503")) == (before[0] + 1, before[1] + 1)


def test_non_json_body_is_transient() -> None:
    """A 200 whose body is not JSON (a proxy page) is a transient failure."""
    graph, _, _ = calendar(script(*(httpx.Response(200, text="<html>") for _ in "abc"),
                                  seen=[]))

    with pytest.raises(TransientError, match="not a JSON object"):
        run_round(graph)


def test_auth_provider_gives_no_token_to_another_host() -> None:
    """The SDK's auth provider attaches msal's token only on graph.base_url."""
    from syncd.graph import _MAILBOX, _msal_tokens
    from syncd.http import origin

    tokens = _msal_tokens(Tokens(), BASE, origin(httpx.URL(BASE)))

    async def ask(uri: str) -> str:
        _MAILBOX.set(ALICE)
        token: str = await tokens.get_authorization_token(uri)
        return token

    assert asyncio.run(ask(f"{BASE}/users/x/events/1")) == "token-0"
    assert asyncio.run(ask("https://attacker.test/v1.0/users/x")) == ""
    assert asyncio.run(ask("http://graph.test/v1.0/users/x")) == ""
