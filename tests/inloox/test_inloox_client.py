"""InLooxClient against httpx.MockTransport: wire shapes and error mapping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import unquote

import httpx
import pytest
from structlog.testing import capture_logs

from syncd import metrics
from syncd.errors import (
    AuthError,
    BilledLocked,
    OutcomeUnknown,
    PermanentError,
    ThrottledError,
    TransientError,
)
from syncd.http import HttpSettings
from syncd.inloox import InLooxClient
from syncd.model import TimeEntry

T = TypeVar("T")
BASE = "https://inloox.test/odata"
KEY = "pat-secret-4711"
PROJECT = "6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10"
TASK = "0b9d1c2e-1111-4222-8333-444455556666"
ENTRY = "a3c2b1d0-9999-4888-8777-666655554444"
PERFORMER = "c0ffee00-0000-4000-8000-000000000001"
START = datetime(2025, 1, 15, 9, 0, tzinfo=UTC)
END = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
ENTITY = {
    "TimeEntryId": ENTRY,
    "ProjectId": PROJECT,
    "TaskItemId": None,
    "StartDateTime": "2025-01-15T09:00:00Z",
    "EndDateTime": "2025-01-15T10:00:00Z",
    "DurationMinutes": 60,
    "DisplayName": "Apollo review",
    "Description": "",
    "PerformedByContactId": PERFORMER,
    "IsBilled": False,
    "CreatedDateTime": "2025-01-15T10:05:00Z",
    "ChangedDateTime": "2025-01-15T10:05:00Z",
}
EXPECTED_ENTRY = TimeEntry(
    id=ENTRY,
    project_id=PROJECT,
    start=START,
    end=END,
    task_id=None,
    is_billed=False,
    performer_id=PERFORMER,
    display_name="Apollo review",
)

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler answering from a script and keeping every request."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


class Sleeps:
    """An injected sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def client_for(
    recorder: Recorder, sleeps: Sleeps | None = None, **kwargs: Any
) -> InLooxClient:
    kwargs.setdefault("api_key", KEY)
    return InLooxClient(
        BASE,
        transport=httpx.MockTransport(recorder),
        sleep=sleeps or Sleeps(),
        **kwargs,
    )


def odata_error(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} happened"}}
    return httpx.Response(status, json=body, headers=headers)


def create(client: InLooxClient, **overrides: Any) -> TimeEntry | None:
    args: dict[str, Any] = {
        "mailbox": "alice@contoso.example",
        "event_id": "AAMkAGI2=",
        "project_id": PROJECT,
        "task_id": None,
        "tag_event": True,
    }
    args.update(overrides)

    async def go() -> TimeEntry | None:
        async with client:
            return await client.create_from_event(**args)

    return run(go())


def call(client: InLooxClient, method: str, *args: Any, **kwargs: Any) -> Any:
    async def go() -> Any:
        async with client:
            return await getattr(client, method)(*args, **kwargs)

    return run(go())


def filter_of(request: httpx.Request) -> str:
    return unquote(request.url.params["$filter"])


# -- the create ---------------------------------------------------------------


def test_create_posts_the_wire_body_to_the_bound_action() -> None:
    """The create POSTs eventId, mailbox, projectId, taskItemId, tagEvent."""
    recorder = Recorder(httpx.Response(201, json=ENTITY))

    create(client_for(recorder), task_id=TASK, tag_event=True)

    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/TimeEntry/CreateTimeEntryFromGraphEvent"
    assert json.loads(request.content) == {
        "eventId": "AAMkAGI2=",
        "mailbox": "alice@contoso.example",
        "projectId": PROJECT,
        "taskItemId": TASK,
        "tagEvent": True,
    }


def test_create_sends_null_task_and_false_tag() -> None:
    """No task is sent as JSON null, tagEvent false as false."""
    recorder = Recorder(httpx.Response(201, json=ENTITY))

    create(client_for(recorder), task_id=None, tag_event=False)

    body = json.loads(recorder.requests[0].content)
    assert body["taskItemId"] is None
    assert body["tagEvent"] is False


@pytest.mark.parametrize("status", [200, 201])
def test_create_returns_the_entity(status: int) -> None:
    """A 200 or 201 carrying the entity becomes the TimeEntry."""
    recorder = Recorder(httpx.Response(status, json=ENTITY))

    assert create(client_for(recorder)) == EXPECTED_ENTRY


@pytest.mark.parametrize(
    "response",
    [httpx.Response(204), httpx.Response(200), httpx.Response(200, content=b" ")],
)
def test_create_empty_success_returns_none(response: httpx.Response) -> None:
    """A 204 or an empty 200 is a success without an entry id."""
    assert create(client_for(Recorder(response))) is None


def test_create_learns_the_performer_for_lookups() -> None:
    """After a create, lookups are narrowed to the performer of the entity."""
    page = httpx.Response(200, json={"value": [ENTITY]})
    recorder = Recorder(httpx.Response(201, json=ENTITY), page)
    client = client_for(recorder)

    async def go() -> None:
        async with client:
            await client.create_from_event(
                mailbox="a@b.example",
                event_id="E1",
                project_id=PROJECT,
                task_id=None,
                tag_event=True,
            )
            await client.find_entries(project_id=PROJECT, start=START, end=END)

    run(go())

    assert filter_of(recorder.requests[1]).endswith(
        f" and PerformedByContactId eq {PERFORMER}"
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.ReadTimeout("read timed out"), OutcomeUnknown),
        (httpx.WriteTimeout("write timed out"), OutcomeUnknown),
        (httpx.RemoteProtocolError("Server disconnected"), OutcomeUnknown),
        (httpx.ReadError("connection reset by peer"), OutcomeUnknown),
        (httpx.WriteError("broken pipe"), OutcomeUnknown),
        (odata_error(500, "InternalError"), OutcomeUnknown),
        (odata_error(502, "BadGateway"), OutcomeUnknown),
        (odata_error(504, "GatewayTimeout"), OutcomeUnknown),
        (httpx.ConnectError("connection refused"), TransientError),
        (httpx.ConnectTimeout("connect timed out"), TransientError),
        (httpx.PoolTimeout("no connection free"), TransientError),
        (odata_error(503, "ServiceUnavailable"), TransientError),
        (odata_error(429, "TooManyRequests", **{"Retry-After": "2"}), ThrottledError),
        (odata_error(401, "Unauthorized"), AuthError),
        (odata_error(403, "Forbidden"), AuthError),
        (odata_error(400, "BadRequest"), PermanentError),
        (odata_error(404, "EventNotFound"), PermanentError),
        (odata_error(404, "ProjectNotFound"), PermanentError),
        (odata_error(422, "TimeEntryTooOld"), PermanentError),
    ],
)
def test_create_failure_is_classified_and_never_resent(
    answer: httpx.Response | Exception, expected: type[Exception]
) -> None:
    """Each failure of the create maps to one error class; one request only."""
    recorder = Recorder(answer)

    with pytest.raises(expected) as caught:
        create(client_for(recorder))

    assert type(caught.value) is expected
    assert len(recorder.requests) == 1


def test_create_error_carries_request_status_and_odata_code() -> None:
    """A refused create names method, URL, status and the server's code."""
    recorder = Recorder(odata_error(422, "TimeEntryTooOld"))

    with pytest.raises(PermanentError) as caught:
        create(client_for(recorder))

    error = caught.value
    assert (error.method, error.status, error.code) == ("POST", 422, "TimeEntryTooOld")
    assert error.url == f"{BASE}/TimeEntry/CreateTimeEntryFromGraphEvent"
    assert error.event_id == "AAMkAGI2="
    assert "TimeEntryTooOld happened" in str(error)


def test_throttled_create_carries_retry_after() -> None:
    """A 429 on the create hands the Retry-After seconds to the caller."""
    recorder = Recorder(odata_error(429, "TooManyRequests", **{"Retry-After": "2.5"}))

    with pytest.raises(ThrottledError) as caught:
        create(client_for(recorder))

    assert caught.value.retry_after == 2.5


def test_auth_error_names_the_config_key_and_hides_the_key() -> None:
    """A 401 says which setting to check and never shows the api key."""
    recorder = Recorder(odata_error(401, "Unauthorized"))

    with pytest.raises(AuthError) as caught:
        create(client_for(recorder))

    assert "inloox.api_key" in str(caught.value)
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value.__dict__)


# -- authentication headers -------------------------------------------------


def test_api_key_is_sent_as_x_api_key() -> None:
    """An api key goes in x-api-key and no Authorization header is sent."""
    recorder = Recorder(httpx.Response(201, json=ENTITY))

    create(client_for(recorder, api_key=KEY))

    headers = recorder.requests[0].headers
    assert headers["x-api-key"] == KEY
    assert "authorization" not in headers


def test_token_is_sent_as_bearer() -> None:
    """A token goes in Authorization: Bearer and no x-api-key is sent."""
    recorder = Recorder(httpx.Response(201, json=ENTITY))

    create(client_for(recorder, api_key=None, token="tok-123"))

    headers = recorder.requests[0].headers
    assert headers["authorization"] == "Bearer tok-123"
    assert "x-api-key" not in headers


def test_exactly_one_credential_is_required() -> None:
    """Neither or both of api_key and token is a programming error."""
    with pytest.raises(ValueError):
        InLooxClient(BASE)
    with pytest.raises(ValueError):
        InLooxClient(BASE, api_key="a", token="b")


# -- queries --------------------------------------------------------------


def test_find_entries_filters_project_and_exact_instants() -> None:
    """find_entries filters ProjectId, StartDateTime, EndDateTime unquoted in Z."""
    recorder = Recorder(httpx.Response(200, json={"value": [ENTITY]}))

    found = call(
        client_for(recorder),
        "find_entries",
        project_id=PROJECT,
        start=datetime(2025, 1, 15, 10, 0, tzinfo=timezone(timedelta(hours=1))),
        end=END,
    )

    assert found == [EXPECTED_ENTRY]
    assert recorder.requests[0].url.path == "/odata/TimeEntry"
    assert filter_of(recorder.requests[0]) == (
        f"ProjectId eq {PROJECT} and StartDateTime eq 2025-01-15T09:00:00Z"
        " and EndDateTime eq 2025-01-15T10:00:00Z"
    )


def test_find_entries_without_project_filters_only_time() -> None:
    """Without a project, only the instants (and performer) are filtered."""
    recorder = Recorder(httpx.Response(200, json={"value": []}))

    call(
        client_for(recorder, performer_id=PERFORMER),
        "find_entries",
        project_id=None,
        start=START,
        end=END,
    )

    assert filter_of(recorder.requests[0]) == (
        "StartDateTime eq 2025-01-15T09:00:00Z and EndDateTime eq "
        f"2025-01-15T10:00:00Z and PerformedByContactId eq {PERFORMER}"
    )


def test_find_entries_follows_every_next_link() -> None:
    """Pages are followed through absolute @odata.nextLink until none is left."""
    second = dict(ENTITY, TimeEntryId="a3c2b1d0-9999-4888-8777-000000000002")
    next_link = f"{BASE}/TimeEntry?$skiptoken=abc"
    recorder = Recorder(
        httpx.Response(200, json={"value": [ENTITY], "@odata.nextLink": next_link}),
        httpx.Response(200, json={"value": [], "@odata.nextLink": next_link + "2"}),
        httpx.Response(200, json={"value": [second]}),
    )

    found = call(
        client_for(recorder),
        "find_entries",
        project_id=PROJECT,
        start=START,
        end=END,
    )

    assert [e.id for e in found] == [ENTRY, second["TimeEntryId"]]
    assert [str(r.url) for r in recorder.requests[1:]] == [
        next_link,
        next_link + "2",
    ]


def test_next_link_to_another_host_is_refused() -> None:
    """The api key is never sent to a host other than the configured one."""
    recorder = Recorder(
        httpx.Response(
            200, json={"value": [], "@odata.nextLink": "https://evil.test/odata/x"}
        )
    )

    with pytest.raises(PermanentError):
        call(
            client_for(recorder),
            "find_entries",
            project_id=PROJECT,
            start=START,
            end=END,
        )

    assert len(recorder.requests) == 1


def test_list_entries_passes_query_options_and_pages() -> None:
    """list_entries sends $filter, $select, $orderby, $top and yields raw items."""
    recorder = Recorder(httpx.Response(200, json={"value": [ENTITY, ENTITY]}))
    client = client_for(recorder)

    async def go() -> list[dict[str, Any]]:
        async with client:
            query = client.list_entries(
                "IsBilled eq false",
                select=["TimeEntryId", "StartDateTime"],
                orderby="StartDateTime desc",
                top=1,
            )
            return [item async for item in query]

    items = run(go())

    assert items == [ENTITY]
    params = recorder.requests[0].url.params
    assert dict(params) == {
        "$filter": "IsBilled eq false",
        "$select": "TimeEntryId,StartDateTime",
        "$orderby": "StartDateTime desc",
        "$top": "1",
    }
    assert "%20" in str(recorder.requests[0].url)


def test_resolve_project_doubles_single_quotes() -> None:
    """A quote in a project name is escaped by doubling it in the literal."""
    answer = {"value": [{"ProjectId": PROJECT, "Name": "O'Brien", "Number": "7"}]}
    recorder = Recorder(httpx.Response(200, json=answer))

    project = call(client_for(recorder), "resolve_project", "O'Brien")

    assert project == PROJECT
    assert recorder.requests[0].url.path == "/odata/Project"
    assert filter_of(recorder.requests[0]) == "Name eq 'O''Brien'"


def test_resolve_project_is_cached() -> None:
    """A resolved name is answered from memory the second time."""
    answer = {"value": [{"ProjectId": PROJECT, "Name": "Apollo", "Number": "1"}]}
    recorder = Recorder(httpx.Response(200, json=answer))
    client = client_for(recorder)

    async def go() -> list[str | None]:
        async with client:
            return [await client.resolve_project("Apollo") for _ in range(3)]

    assert run(go()) == [PROJECT, PROJECT, PROJECT]
    assert len(recorder.requests) == 1


def test_resolve_unknown_project_is_none() -> None:
    """A name no project has resolves to None."""
    recorder = Recorder(httpx.Response(200, json={"value": []}))

    assert call(client_for(recorder), "resolve_project", "Nobody") is None


def test_ambiguous_project_name_is_permanent() -> None:
    """Two projects with one name cannot be told apart: a permanent error."""
    answer = {"value": [{"ProjectId": PROJECT}, {"ProjectId": TASK}]}
    recorder = Recorder(httpx.Response(200, json=answer))

    with pytest.raises(PermanentError):
        call(client_for(recorder), "resolve_project", "Apollo")


def test_get_entry_and_missing_entry() -> None:
    """get_entry reads TimeEntry(<guid>); a 404 is None."""
    recorder = Recorder(httpx.Response(200, json=ENTITY), odata_error(404, "NotFound"))
    client = client_for(recorder)

    async def go() -> list[TimeEntry | None]:
        async with client:
            return [await client.get_entry(ENTRY), await client.get_entry(ENTRY)]

    assert run(go()) == [EXPECTED_ENTRY, None]
    assert str(recorder.requests[0].url) == f"{BASE}/TimeEntry({ENTRY})"


def test_html_page_instead_of_json_is_transient() -> None:
    """A proxy's HTML page where an entity was due: tried again later."""
    page = httpx.Response(200, text="<html>maintenance</html>",
                          headers={"Content-Type": "text/html"})

    with pytest.raises(TransientError, match="not a JSON object"):
        call(client_for(Recorder(page)), "get_entry", ENTRY)


def test_learn_performer_narrows_later_lookups() -> None:
    """The performer of one of our entries filters the lookups that follow;
    a vanished entry is passed over."""
    recorder = Recorder(odata_error(404, "NotFound"),
                        httpx.Response(200, json=ENTITY),
                        httpx.Response(200, json={"value": []}))
    client = client_for(recorder)

    gone = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"

    async def go() -> bool:
        async with client:
            known = await client.learn_performer(lambda: [gone, ENTRY])
            await client.find_entries(project_id=None, start=START, end=END)
            return known

    assert run(go()) is True
    assert f"PerformedByContactId eq {PERFORMER}" in filter_of(recorder.requests[2])


# -- retries of idempotent requests -----------------------------------------


def test_get_is_retried_on_503_honouring_retry_after() -> None:
    """A GET answered 503 with Retry-After waits that long and tries again."""
    recorder = Recorder(
        odata_error(503, "ServiceUnavailable", **{"Retry-After": "1.5"}),
        httpx.Response(200, json=ENTITY),
    )
    sleeps = Sleeps()

    entry = call(client_for(recorder, sleeps), "get_entry", ENTRY)

    assert entry == EXPECTED_ENTRY
    assert len(recorder.requests) == 2
    assert sleeps.delays == [1.5]


def test_get_read_timeout_is_transient_not_outcome_unknown() -> None:
    """A GET that keeps timing out ends as a plain TransientError."""
    recorder = Recorder(httpx.ReadTimeout("read timed out"))

    with pytest.raises(TransientError) as caught:
        call(client_for(recorder), "get_entry", ENTRY)

    assert type(caught.value) is TransientError
    assert len(recorder.requests) > 1


def test_get_is_not_retried_on_permanent_error() -> None:
    """A 400 on a GET is not worth repeating."""
    recorder = Recorder(odata_error(400, "BadRequest"))

    with pytest.raises(PermanentError):
        call(client_for(recorder), "get_entry", ENTRY)

    assert len(recorder.requests) == 1


# -- updates and deletes -----------------------------------------------------


def test_update_patches_only_the_given_fields() -> None:
    """update_entry PATCHes TimeEntry(<guid>) with only the fields given."""
    recorder = Recorder(httpx.Response(204))

    call(client_for(recorder), "update_entry", ENTRY, project_id=TASK)

    (request,) = recorder.requests
    assert (request.method, str(request.url)) == (
        "PATCH",
        f"{BASE}/TimeEntry({ENTRY})",
    )
    assert json.loads(request.content) == {"ProjectId": TASK}


def test_update_with_task_none_removes_the_task() -> None:
    """``task_id=None`` is sent as an explicit null; leaving it out keeps it."""
    recorder = Recorder(httpx.Response(204))

    call(client_for(recorder), "update_entry", ENTRY, task_id=None)

    assert json.loads(recorder.requests[0].content) == {"TaskItemId": None}


def test_update_times_are_absolute_utc_instants() -> None:
    """New times are sent as UTC instants with Z, with the new duration."""
    recorder = Recorder(httpx.Response(204))

    call(client_for(recorder), "update_entry", ENTRY, start=START, end=END)

    assert json.loads(recorder.requests[0].content) == {
        "StartDateTime": "2025-01-15T09:00:00Z",
        "EndDateTime": "2025-01-15T10:00:00Z",
        "DurationMinutes": 60,
    }


def test_update_of_billed_entry_is_billed_locked() -> None:
    """A 409 TimeEntryBilled on PATCH is BilledLocked."""
    recorder = Recorder(odata_error(409, "TimeEntryBilled"))

    with pytest.raises(BilledLocked):
        call(client_for(recorder), "update_entry", ENTRY, task_id=TASK)


def test_update_is_retried_on_503() -> None:
    """A PATCH with absolute values is idempotent and retried."""
    recorder = Recorder(odata_error(503, "Busy"), httpx.Response(204))

    call(client_for(recorder), "update_entry", ENTRY, task_id=TASK)

    assert len(recorder.requests) == 2


def test_delete_sends_delete() -> None:
    """delete_entry sends DELETE TimeEntry(<guid>) and accepts 204."""
    recorder = Recorder(httpx.Response(204))

    call(client_for(recorder), "delete_entry", ENTRY)

    assert [(r.method, str(r.url)) for r in recorder.requests] == [
        ("DELETE", f"{BASE}/TimeEntry({ENTRY})"),
    ]


def test_delete_of_missing_entry_is_done() -> None:
    """A 404 on DELETE means the entry is already gone: no error."""
    recorder = Recorder(odata_error(404, "NotFound"))

    assert call(client_for(recorder), "delete_entry", ENTRY) is None


def test_delete_of_billed_entry_is_billed_locked() -> None:
    """A 409 TimeEntryBilled on DELETE is BilledLocked, with its code."""
    recorder = Recorder(odata_error(409, "TimeEntryBilled"))

    with pytest.raises(BilledLocked) as caught:
        call(client_for(recorder), "delete_entry", ENTRY)

    assert (caught.value.status, caught.value.code) == (409, "TimeEntryBilled")


def test_entry_ids_must_be_guids() -> None:
    """An entry id that is not a guid never reaches the URL."""
    recorder = Recorder(httpx.Response(204))

    with pytest.raises(PermanentError):
        call(client_for(recorder), "delete_entry", "x) or (1 eq 1")

    assert recorder.requests == []


# -- limits, counters and logs ----------------------------------------------


def test_concurrency_is_limited() -> None:
    """No more requests are in flight than the configured limit."""
    in_flight = 0
    peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json=ENTITY)

    client = InLooxClient(
        BASE, api_key=KEY, concurrency=3, transport=httpx.MockTransport(slow)
    )

    async def go() -> None:
        async with client:
            await asyncio.gather(*(client.get_entry(ENTRY) for _ in range(10)))

    run(go())

    assert peak == 3
    assert client.requests == 10


def test_requests_are_counted_and_measured() -> None:
    """Every attempt counts in client.requests and in the metrics by status."""
    recorder = Recorder(
        odata_error(429, "TooMany", **{"Retry-After": "0"}),
        httpx.Response(200, json=ENTITY),
    )
    client = client_for(recorder)
    requests = metrics.INLOOX_REQUESTS.labels(operation="get", status="429")
    throttles = metrics.THROTTLES.labels(service="inloox")
    before = (requests._value.get(), throttles._value.get())

    call(client, "get_entry", ENTRY)

    assert client.requests == 2
    after = (requests._value.get(), throttles._value.get())
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_each_request_logs_one_debug_line_without_secrets() -> None:
    """One inloox_request line per request: method, operation, status, time."""
    recorder = Recorder(httpx.Response(201, json=ENTITY))

    with capture_logs() as logs:
        create(client_for(recorder))

    requests = [e for e in logs if e["event"] == "inloox_request"]
    assert len(requests) == 1
    line = requests[0]
    assert line["log_level"] == "debug"
    assert (line["method"], line["operation"], line["status"]) == (
        "POST",
        "create",
        "201",
    )
    assert isinstance(line["elapsed_ms"], float)
    assert KEY not in repr(logs)


def test_create_over_the_total_deadline_is_outcome_unknown() -> None:
    """A create still unanswered at the total deadline may have happened."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(201, json=ENTITY)

    client = InLooxClient(
        BASE,
        api_key=KEY,
        settings=HttpSettings(total_timeout=0.05),
        transport=httpx.MockTransport(hang),
    )

    with pytest.raises(OutcomeUnknown):
        create(client)


def test_get_over_the_total_deadline_is_transient() -> None:
    """A read still unanswered at the total deadline is merely transient."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=ENTITY)

    client = InLooxClient(
        BASE,
        api_key=KEY,
        settings=HttpSettings(total_timeout=0.05, max_attempts=1),
        transport=httpx.MockTransport(hang),
    )

    with pytest.raises(TransientError) as caught:
        call(client, "get_entry", ENTRY)

    assert type(caught.value) is TransientError


def test_clients_can_share_one_limit() -> None:
    """Two clients given one semaphore stay under it together."""
    in_flight = 0
    peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json=ENTITY)

    async def go() -> None:
        limit = asyncio.Semaphore(2)
        clients = [
            InLooxClient(
                BASE, api_key=k, limit=limit, transport=httpx.MockTransport(slow)
            )
            for k in ("key-a", "key-b")
        ]
        await asyncio.gather(*(c.get_entry(ENTRY) for c in clients for _ in range(4)))
        for client in clients:
            await client.aclose()

    run(go())

    assert peak == 2
