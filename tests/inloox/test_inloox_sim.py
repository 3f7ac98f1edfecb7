"""InLooxClient against the simulated InLoox over TLS (integration)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar

import pytest

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
from syncd.sim import Simulator
from syncd.sim.scenario import parse_scenario

T = TypeVar("T")
MAILBOX = "alice@contoso.example"
CONTACT = "c0ffee00-0000-4000-8000-00000000a11c"
APOLLO = "6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10"
ZEUS = "0d7f3a11-2b2c-4d4e-8f5a-6b7c8d9e0f10"
SCENARIO: dict[str, Any] = {
    "name": "inloox-client",
    "tenant_id": "11111111-2222-4333-8444-555555555555",
    "app": {"client_id": "app-id", "client_secret": "app-secret"},
    "anchor": {"weeks_before_current": 0},
    "settings": {"inloox_page_size": 2},
    "users": [
        {
            "mailbox": MAILBOX,
            "name": "Alice",
            "timezone": "UTC",
            "inloox": {"contact_id": CONTACT, "api_key": "pat-alice"},
        }
    ],
    "projects": [
        {"id": APOLLO, "name": "Apollo", "number": "P-1"},
        {"id": ZEUS, "name": "Zeus's Project", "number": "P-2"},
    ],
    "events": [
        {
            "key": f"review{day}",
            "subject": f"Apollo review {day}",
            "calendars": ["alice"],
            "day": day,
            "start": "09:00",
            "end": "10:30",
            "timezone": "UTC",
            "categories": ["Apollo"],
        }
        for day in range(3)
    ]
    + [
        {
            "key": "ancient",
            "subject": "Too long ago",
            "calendars": ["alice"],
            "day": -60,
            "start": "09:00",
            "end": "10:00",
            "timezone": "UTC",
        }
    ],
}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(parse_scenario(SCENARIO))
    with simulator:
        yield simulator
    simulator.close()


def with_client(
    sim: Simulator,
    work: Callable[[InLooxClient], Awaitable[T]],
    **kwargs: Any,
) -> T:
    kwargs.setdefault("api_key", sim.inloox_key(MAILBOX))

    async def go() -> T:
        async with InLooxClient(sim.inloox_url, ca_bundle=sim.ca_path, **kwargs) as c:
            return await work(c)

    return asyncio.run(go())


def review_times(sim: Simulator, day: int) -> tuple[datetime, datetime]:
    """The scenario's review on ``day``: 09:00-10:30 UTC after the anchor Monday."""
    monday = sim.scenario.anchor_date(sim.clock().date())
    date = monday + timedelta(days=day)
    start = datetime.combine(date, time(9, 0), UTC)
    return start, start + timedelta(minutes=90)


def book(client: InLooxClient, sim: Simulator, key: str) -> Awaitable[Any]:
    return client.create_from_event(
        mailbox=MAILBOX,
        event_id=sim.event_id(MAILBOX, key),
        project_id=APOLLO,
        task_id=None,
        tag_event=True,
    )


def test_create_with_tag_event_books_and_tags(sim: Simulator) -> None:
    """A create books the event's times on the project and tags the event."""
    start, end = review_times(sim, 1)

    async def work(client: InLooxClient) -> tuple[Any, list[TimeEntry]]:
        created = await book(client, sim, "review1")
        found = await client.find_entries(project_id=APOLLO, start=start, end=end)
        return created, found

    created, found = with_client(sim, work)

    assert isinstance(created, TimeEntry)
    assert (created.project_id, created.start, created.end) == (APOLLO, start, end)
    assert (created.performer_id, created.display_name) == (CONTACT, "Apollo review 1")
    assert found == [created]
    event = sim.calendar(MAILBOX).get(sim.event_id(MAILBOX, "review1"))
    assert "InLoox" in event["categories"]


def test_empty_create_is_found_by_lookup(sim: Simulator) -> None:
    """A 204 create returns None and the entry is found by its exact times."""
    sim.faults.create_response = "empty204"
    start, end = review_times(sim, 0)

    async def work(client: InLooxClient) -> tuple[Any, list[TimeEntry]]:
        created = await book(client, sim, "review0")
        return created, await client.find_entries(
            project_id=APOLLO, start=start, end=end
        )

    created, found = with_client(sim, work)

    assert created is None
    assert [(e.start, e.end, e.project_id) for e in found] == [(start, end, APOLLO)]


def test_dropped_connection_after_commit_is_outcome_unknown(sim: Simulator) -> None:
    """A create that commits and then loses its connection: unknown, one entry."""
    sim.faults.drop_after_commit()
    start, end = review_times(sim, 2)

    async def work(client: InLooxClient) -> list[TimeEntry]:
        with pytest.raises(OutcomeUnknown):
            await book(client, sim, "review2")
        return await client.find_entries(project_id=APOLLO, start=start, end=end)

    found = with_client(sim, work)

    assert len(sim.inloox_entries(MAILBOX)) == 1
    assert [(e.start, e.end) for e in found] == [(start, end)]
    assert sim.stats.inloox_creates == 1


def test_bad_gateway_after_commit_is_outcome_unknown(sim: Simulator) -> None:
    """A create answered 502 after its commit is unknown, never resent."""
    sim.faults.bad_gateway_after_commit()

    async def work(client: InLooxClient) -> None:
        await book(client, sim, "review0")

    with pytest.raises(OutcomeUnknown):
        with_client(sim, work)

    assert len(sim.inloox_entries(MAILBOX)) == 1
    assert sim.stats.count("inloox", "POST") == 1


def test_billed_entry_cannot_be_changed_or_deleted(sim: Simulator) -> None:
    """A billed entry answers 409 to PATCH and DELETE: BilledLocked both times."""

    async def work(client: InLooxClient) -> list[type[Exception]]:
        created = await book(client, sim, "review0")
        sim.set_billed(created.id, True)
        raised: list[type[Exception]] = []
        for attempt in (
            client.update_entry(created.id, project_id=ZEUS),
            client.delete_entry(created.id),
        ):
            with pytest.raises(BilledLocked) as caught:
                await attempt
            raised.append(type(caught.value))
        return raised

    assert with_client(sim, work) == [BilledLocked, BilledLocked]
    (entry,) = sim.inloox_entries(MAILBOX)
    assert entry["ProjectId"] == APOLLO


def test_update_moves_and_delete_removes(sim: Simulator) -> None:
    """PATCH moves the entry; DELETE removes it; a second DELETE is fine."""
    start, end = review_times(sim, 0)
    later = (start + timedelta(hours=2), end + timedelta(hours=2))

    async def work(client: InLooxClient) -> tuple[Any, Any]:
        created = await book(client, sim, "review0")
        await client.update_entry(
            created.id, project_id=ZEUS, start=later[0], end=later[1]
        )
        moved = await client.get_entry(created.id)
        await client.delete_entry(created.id)
        await client.delete_entry(created.id)
        return moved, await client.get_entry(created.id)

    moved, gone = with_client(sim, work)

    assert (moved.project_id, moved.start, moved.end) == (ZEUS, *later)
    assert gone is None
    assert sim.inloox_entries(MAILBOX) == []


def test_too_old_event_is_permanent_with_code(sim: Simulator) -> None:
    """An event older than the backdating limit is refused: TimeEntryTooOld."""

    async def work(client: InLooxClient) -> None:
        await book(client, sim, "ancient")

    with pytest.raises(PermanentError) as caught:
        with_client(sim, work)

    assert (caught.value.status, caught.value.code) == (422, "TimeEntryTooOld")


def test_wrong_key_is_auth_error(sim: Simulator) -> None:
    """An unknown personal access token is an AuthError."""

    async def work(client: InLooxClient) -> Any:
        return await client.get_entry(APOLLO)

    with pytest.raises(AuthError):
        with_client(sim, work, api_key="not-a-key")


def test_bearer_token_is_accepted(sim: Simulator) -> None:
    """The same token works as Authorization: Bearer."""

    async def work(client: InLooxClient) -> Any:
        return await client.resolve_project("Apollo")

    token = sim.inloox_key(MAILBOX)

    assert with_client(sim, work, api_key=None, token=token) == APOLLO


def test_resolve_project_with_a_quote_in_its_name(sim: Simulator) -> None:
    """Project names resolve to ids, quotes included; unknown names to None."""

    async def work(client: InLooxClient) -> list[str | None]:
        return [
            await client.resolve_project("Zeus's Project"),
            await client.resolve_project("Hermes"),
        ]

    assert with_client(sim, work) == [ZEUS, None]


def test_list_entries_follows_pages(sim: Simulator) -> None:
    """Three entries in pages of two are all listed, in the asked order."""

    async def work(client: InLooxClient) -> list[dict[str, Any]]:
        for key in ("review2", "review0", "review1"):
            await book(client, sim, key)
        query = client.list_entries(
            f"ProjectId eq {APOLLO}",
            select=["DisplayName"],
            orderby="StartDateTime asc",
        )
        return [item async for item in query]

    items = with_client(sim, work)

    assert [i["DisplayName"] for i in items] == [
        "Apollo review 0",
        "Apollo review 1",
        "Apollo review 2",
    ]


def test_throttled_read_is_retried(sim: Simulator) -> None:
    """A 429 on a read is waited out and the read retried."""
    sim.faults.throttle_inloox(count=1, retry_after=0)

    async def work(client: InLooxClient) -> Any:
        return await client.resolve_project("Apollo")

    assert with_client(sim, work) == APOLLO
    assert sim.stats.count("inloox", "GET", status=429) == 1


def test_throttled_create_is_not_retried(sim: Simulator) -> None:
    """A 429 on the create goes to the caller with its Retry-After, sent once."""
    sim.faults.throttle_inloox(count=1, retry_after=0.5)

    async def work(client: InLooxClient) -> None:
        await book(client, sim, "review0")

    with pytest.raises(ThrottledError) as caught:
        with_client(sim, work)

    assert caught.value.retry_after == 0.5
    assert sim.stats.count("inloox", "POST") == 1
    assert sim.inloox_entries(MAILBOX) == []


def test_untrusted_certificate_names_the_ca_bundle_setting(sim: Simulator) -> None:
    """Without the simulator's CA the TLS failure points at tls.ca_bundle."""

    async def work() -> None:
        settings = HttpSettings(max_attempts=1)
        key = sim.inloox_key(MAILBOX)
        async with InLooxClient(sim.inloox_url, api_key=key, settings=settings) as c:
            await c.get_entry(APOLLO)

    with pytest.raises(TransientError) as caught:
        asyncio.run(work())

    assert "tls.ca_bundle" in str(caught.value)
