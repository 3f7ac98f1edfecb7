"""The simulated InLoox: OData queries, booking from Graph events, faults."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from syncd.sim import Simulator
from tests.sim.conftest import ALICE, BOB, delta_url, whole_round

APOLLO = "6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10"
ZEPHYR = "2b7e4c91-58a3-4d0f-b6e2-9c1a7f3d5e84"
ALICE_CONTACT = "a1c3e5f7-1111-4a2b-9c3d-5e7f9a1b3c5d"


@pytest.fixture
def inloox(sim: Simulator) -> Iterator[httpx.Client]:
    headers = {"x-api-key": sim.inloox_key(ALICE)}
    with httpx.Client(
        base_url=sim.inloox_url + "/",
        verify=sim.ssl_context(),
        headers=headers,
        timeout=10,
    ) as client:
        yield client


def book(
    client: httpx.Client, event_id: str, project: str = APOLLO, tag: bool = True
) -> httpx.Response:
    return client.post(
        "TimeEntry/CreateTimeEntryFromGraphEvent",
        json={
            "eventId": event_id,
            "mailbox": ALICE,
            "projectId": project,
            "taskItemId": None,
            "tagEvent": tag,
        },
    )


def manual(
    client: httpx.Client,
    start: datetime,
    minutes: int = 30,
    name: str = "manual",
    project: str = APOLLO,
) -> httpx.Response:
    return client.post(
        "TimeEntry",
        json={
            "ProjectId": project,
            "DisplayName": name,
            "StartDateTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "EndDateTime": (start + timedelta(minutes=minutes)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        },
    )


def test_create_from_event_books_its_times(
    sim: Simulator, inloox: httpx.Client, anchor: date
) -> None:
    """The entry takes start, end and subject from the event; 201 with entity."""
    response = book(inloox, sim.event_id(ALICE, "apollo-kickoff"))

    entry = response.json()
    day = anchor.isoformat()
    assert response.status_code == 201
    assert (entry["StartDateTime"], entry["EndDateTime"]) == (
        f"{day}T13:00:00Z",
        f"{day}T14:30:00Z",
    )
    assert entry["DurationMinutes"] == 90
    assert entry["DisplayName"] == "Apollo Kick-off mit Müller GmbH"
    assert entry["PerformedByContactId"] == ALICE_CONTACT
    assert entry["ProjectId"] == APOLLO
    assert entry["IsBilled"] is False
    assert sim.inloox_entries(ALICE) == [
        {k: v for k, v in entry.items() if not k.startswith("@")}
    ]


def test_tag_event_is_a_calendar_change(
    sim: Simulator, inloox: httpx.Client, graph: httpx.Client, anchor: date
) -> None:
    """tagEvent adds the InLoox category, and the next delta round shows it."""
    _, link, _ = whole_round(graph, delta_url(sim, ALICE, anchor))
    event_id = sim.event_id(ALICE, "apollo-architecture")

    book(inloox, event_id)
    items, _, _ = whole_round(graph, link)

    assert [(i["id"], i["categories"]) for i in items] == [
        (event_id, ["Track", "InLoox"])
    ]


def test_occurrence_id_books_that_occurrence(
    sim: Simulator, inloox: httpx.Client, anchor: date
) -> None:
    """Booking an occurrence uses its own times; tagging makes it an exception."""
    master = sim.event_id(ALICE, "standup")
    monday = datetime.combine(anchor, datetime.min.time(), UTC)
    occurrence = next(
        e
        for e in sim.calendar(ALICE).view(monday, monday + timedelta(1))
        if e.get("seriesMasterId") == master
    )

    entry = book(inloox, occurrence["id"]).json()

    assert entry["StartDateTime"] == f"{anchor.isoformat()}T08:30:00Z"
    assert entry["DisplayName"] == "Daily Stand-up"
    tagged = sim.calendar(ALICE).get(occurrence["id"])
    assert (tagged["type"], tagged["categories"]) == (
        "exception",
        ["Internal", "InLoox"],
    )


@pytest.mark.parametrize(("mode", "status"), [("entity200", 200), ("empty204", 204)])
def test_create_response_modes(
    sim: Simulator, inloox: httpx.Client, mode: str, status: int
) -> None:
    """The create answers per create_response; the entry exists either way."""
    sim.faults.create_response = mode

    response = book(inloox, sim.event_id(ALICE, "zephyr-workshop"), ZEPHYR)

    assert response.status_code == status
    assert len(sim.inloox_entries(ALICE)) == 1


def test_drop_after_commit_closes_without_answer(
    sim: Simulator, inloox: httpx.Client
) -> None:
    """The connection closes unanswered, yet the entry was committed."""
    sim.faults.drop_after_commit()

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        book(inloox, sim.event_id(ALICE, "apollo-kickoff"))

    assert len(sim.inloox_entries(ALICE)) == 1
    assert sim.stats.count("inloox", "POST", "create_from_event", 0) == 1


def test_bad_gateway_after_commit(sim: Simulator, inloox: httpx.Client) -> None:
    """A 502 answers a create that was committed."""
    sim.faults.bad_gateway_after_commit()

    response = book(inloox, sim.event_id(ALICE, "apollo-kickoff"))

    assert response.status_code == 502
    assert len(sim.inloox_entries(ALICE)) == 1


def test_billed_entry_cannot_be_deleted_or_patched(
    sim: Simulator, inloox: httpx.Client
) -> None:
    """DELETE and PATCH of a billed entry answer 409 TimeEntryBilled."""
    entry_id = book(inloox, sim.event_id(ALICE, "apollo-kickoff")).json()["TimeEntryId"]
    sim.set_billed(entry_id)

    deleted = inloox.delete(f"TimeEntry({entry_id})")
    patched = inloox.patch(f"TimeEntry({entry_id})", json={"DisplayName": "x"})

    assert (deleted.status_code, patched.status_code) == (409, 409)
    assert deleted.json()["error"]["code"] == "TimeEntryBilled"
    assert len(sim.inloox_entries(ALICE)) == 1


def test_patch_and_delete_an_entry(sim: Simulator, inloox: httpx.Client) -> None:
    """PATCH moves an entry (duration follows), DELETE removes it."""
    entry = book(inloox, sim.event_id(ALICE, "apollo-kickoff")).json()
    key = f"TimeEntry({entry['TimeEntryId']})"
    start = datetime.fromisoformat(entry["StartDateTime"]) + timedelta(hours=1)

    patched = inloox.patch(
        key,
        json={"EndDateTime": start.strftime("%Y-%m-%dT%H:%M:%SZ")},
        headers={"Prefer": "return=representation"},
    )
    deleted = inloox.delete(key)

    assert patched.json()["DurationMinutes"] == 60
    assert deleted.status_code == 204
    assert inloox.get(key).status_code == 404


def test_backdating_limit_is_422(sim: Simulator, inloox: httpx.Client) -> None:
    """An event that started more than 30 days ago cannot be booked."""
    start = sim.clock() - timedelta(days=31)
    old = sim.calendar(ALICE).add_event(
        subject="Alt", start=start, end=start + timedelta(hours=1)
    )

    response = book(inloox, old)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "TimeEntryTooOld"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"mailbox": ALICE, "projectId": APOLLO}, 400, "BadRequest"),
        (
            {"eventId": "nope", "mailbox": ALICE, "projectId": APOLLO},
            404,
            "EventNotFound",
        ),
        (
            {"eventId": "E", "mailbox": ALICE, "projectId": ALICE_CONTACT},
            404,
            "ProjectNotFound",
        ),
        ({"eventId": "E", "mailbox": BOB, "projectId": APOLLO}, 403, "Forbidden"),
    ],
)
def test_create_errors(
    sim: Simulator, inloox: httpx.Client, body: dict[str, str], status: int, code: str
) -> None:
    """Missing fields, unknown event or project, another user's mailbox."""
    if body.get("eventId") == "E":
        body = {**body, "eventId": sim.event_id(ALICE, "lunch")}

    response = inloox.post("TimeEntry/CreateTimeEntryFromGraphEvent", json=body)

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


def test_auth_by_api_key_or_bearer(sim: Simulator) -> None:
    """x-api-key and Bearer both work; nothing else does."""
    with httpx.Client(verify=sim.ssl_context()) as client:
        url = f"{sim.inloox_url}/Project"
        keyed = client.get(url, headers={"x-api-key": sim.inloox_key(BOB)})
        bearer = client.get(
            url, headers={"Authorization": f"Bearer {sim.inloox_key(BOB)}"}
        )
        anonymous = client.get(url)

    assert (keyed.status_code, bearer.status_code) == (200, 200)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "Unauthorized"


def test_project_by_name(inloox: httpx.Client) -> None:
    """$filter=Name eq 'Apollo' resolves the project id."""
    response = inloox.get("Project", params={"$filter": "Name eq 'Apollo'"})

    assert response.json()["value"] == [
        {"ProjectId": APOLLO, "Name": "Apollo", "Number": "P-2024-017"}
    ]


def test_odata_query_options(sim: Simulator, inloox: httpx.Client) -> None:
    """$filter with and/or/parentheses/datetimes, $orderby, $select, $top, $count."""
    base = sim.clock().replace(microsecond=0) - timedelta(days=2)
    for hour, project in [(9, APOLLO), (10, ZEPHYR), (11, APOLLO), (12, APOLLO)]:
        manual(inloox, base.replace(hour=hour, minute=0, second=0), project=project)
    since = base.replace(hour=10, minute=0, second=0).strftime("%Y-%m-%dT%H:%M:%SZ")

    response = inloox.get(
        "TimeEntry",
        params={
            "$filter": f"(ProjectId eq {APOLLO} or ProjectId eq {ZEPHYR}) and "
            f"StartDateTime ge {since} and IsBilled eq false and TaskItemId eq null",
            "$orderby": "StartDateTime desc",
            "$select": "StartDateTime,ProjectId",
            "$top": "2",
            "$count": "true",
        },
    )

    body = response.json()
    assert body["@odata.count"] == 3
    assert [e["StartDateTime"][11:13] for e in body["value"]] == ["12", "11"]
    assert set(body["value"][0]) == {"StartDateTime", "ProjectId"}


def test_pages_of_one_hundred(sim: Simulator, inloox: httpx.Client) -> None:
    """105 entries come as 100 plus 5 with an absolute nextLink."""
    base = sim.clock().replace(microsecond=0) - timedelta(days=5)
    for i in range(105):
        manual(inloox, base + timedelta(minutes=30 * i))

    first = inloox.get("TimeEntry", params={"$orderby": "StartDateTime"}).json()
    second = inloox.get(first["@odata.nextLink"]).json()

    assert len(first["value"]) == 100
    assert first["@odata.nextLink"].startswith(f"{sim.inloox_url}/TimeEntry?")
    assert len(second["value"]) == 5
    assert "@odata.nextLink" not in second


def test_bad_filter_is_400(inloox: httpx.Client) -> None:
    """An unknown property or broken expression answers 400."""
    unknown = inloox.get("TimeEntry", params={"$filter": "Nope eq 1"})
    broken = inloox.get("TimeEntry", params={"$filter": "(IsBilled eq true"})

    assert (unknown.status_code, broken.status_code) == (400, 400)


def test_entries_are_per_contact(sim: Simulator, inloox: httpx.Client) -> None:
    """Bob's token does not see Alice's entries."""
    book(inloox, sim.event_id(ALICE, "apollo-kickoff"))

    with httpx.Client(verify=sim.ssl_context()) as client:
        seen = client.get(
            f"{sim.inloox_url}/TimeEntry", headers={"x-api-key": sim.inloox_key(BOB)}
        ).json()

    assert seen["value"] == []


def test_concurrency_limit_is_429(sim: Simulator) -> None:
    """Over the InLoox concurrency limit a request gets 429 with Retry-After."""
    from concurrent.futures import ThreadPoolExecutor

    sim.faults.inloox_concurrency = 2
    sim.faults.latency["inloox"] = 0.3

    def fetch(_: int) -> httpx.Response:
        with httpx.Client(verify=sim.ssl_context()) as client:
            return client.get(
                f"{sim.inloox_url}/Project",
                headers={"x-api-key": sim.inloox_key(ALICE)},
            )

    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(fetch, range(3)))

    assert sorted(r.status_code for r in responses) == [200, 200, 429]
    assert (
        next(r for r in responses if r.status_code == 429).headers["Retry-After"] == "1"
    )
