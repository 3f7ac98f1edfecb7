"""GraphCalendar and msal against the simulator over TLS: rounds, faults, auth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncd.auth import ClientCredentialsAuth
from syncd.errors import DeltaExpired, TransientError
from syncd.graph import GraphCalendar
from syncd.http import HttpSettings
from syncd.model import DeltaPage, Event, Removed, Window
from syncd.sim import Simulator, load_scenario


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(load_scenario(None)) as simulator:
        yield simulator


def window() -> Window:
    now = datetime.now(UTC).replace(microsecond=0)
    return Window(now - timedelta(days=28), now + timedelta(days=14))


def graph(sim: Simulator, **kwargs: Any) -> tuple[GraphCalendar, Sleeps]:
    auth = ClientCredentialsAuth(sim.authority, sim.client_id, sim.client_secret,
                                 ca_bundle=sim.ca_path)
    sleeps = Sleeps()
    kwargs.setdefault("settings", HttpSettings(max_attempts=4, max_delay=30.0))
    return GraphCalendar(sim.graph_url, auth, ca_bundle=sim.ca_path, sleep=sleeps,
                         **kwargs), sleeps


def run_round(source: GraphCalendar, mailbox: str, delta_link: str | None = None,
              win: Window | None = None) -> list[DeltaPage]:
    async def collect() -> list[DeltaPage]:
        try:
            return [p async for p in source.delta_round(mailbox, win or window(),
                                                        delta_link)]
        finally:
            await source.aclose()

    return asyncio.run(collect())


def ids(pages: list[DeltaPage], kind: type = Event) -> set[str]:
    return {item.id for p in pages for item in p.items if isinstance(item, kind)}


def test_full_round_brings_every_event_of_the_window(sim: Simulator) -> None:
    """Every page is followed: the round holds the window's events and masters."""
    mailbox = sim.users[0]
    win = window()
    source, _ = graph(sim, page_size=5)
    view = sim.calendar(mailbox).view(win.start, win.end)
    masters = {e["seriesMasterId"] for e in view if e.get("seriesMasterId")}
    expected = {e["id"] for e in view} | masters

    pages = run_round(source, mailbox, win=win)

    assert len(pages) > 1
    assert pages[-1].delta_link is not None
    assert all(p.next_link for p in pages[:-1])
    assert ids(pages) == expected
    assert sim.stats.without_immutable_id == 0


def test_next_round_brings_only_the_change(sim: Simulator) -> None:
    """From the delta link, a round carries just the event added since."""
    mailbox = sim.users[1]
    source, _ = graph(sim)
    link = run_round(source, mailbox)[-1].delta_link
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    added = sim.calendar(mailbox).add_event(
        subject="Nachbesprechung", start=start, end=start + timedelta(minutes=30),
        categories=["Track"])

    pages = run_round(graph(sim)[0], mailbox, delta_link=link)

    assert ids(pages) == {added}
    event = next(i for p in pages for i in p.items if isinstance(i, Event))
    assert (event.start, event.categories) == (start, ("Track",))


def test_deleted_event_arrives_as_removed(sim: Simulator) -> None:
    """A deleted event shows up as Removed in the next round."""
    mailbox = sim.users[1]
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    doomed = sim.calendar(mailbox).add_event(
        subject="Abgesagt", start=start, end=start + timedelta(hours=1))
    link = run_round(graph(sim)[0], mailbox)[-1].delta_link
    sim.calendar(mailbox).delete_event(doomed)

    pages = run_round(graph(sim)[0], mailbox, delta_link=link)

    assert doomed in ids(pages, Removed)


def test_expired_delta_link_raises_delta_expired(sim: Simulator) -> None:
    """A delta link the simulator forgot answers 410: DeltaExpired."""
    mailbox = sim.users[2]
    link = run_round(graph(sim)[0], mailbox)[-1].delta_link
    sim.faults.expire_delta(mailbox, "resyncRequired")

    with pytest.raises(DeltaExpired):
        run_round(graph(sim)[0], mailbox, delta_link=link)


def test_throttled_page_is_retried_after_retry_after(sim: Simulator) -> None:
    """429 with Retry-After 1: the page is asked again after 1 s, round completes."""
    mailbox = sim.users[0]
    source, sleeps = graph(sim)
    sim.faults.throttle_graph(count=1, retry_after=1)

    pages = run_round(source, mailbox)

    assert sleeps.delays == [1.0]
    assert pages[-1].delta_link is not None


def test_outage_mid_round_retries_then_gives_up(sim: Simulator) -> None:
    """503 on every continuation page: TransientError, no delta link reached."""
    mailbox = sim.users[0]
    source, sleeps = graph(sim, page_size=5,
                           settings=HttpSettings(max_attempts=3, max_delay=30.0))
    sim.faults.fail_graph(503, count=3, pages_only=True)
    got: list[DeltaPage] = []

    async def collect() -> None:
        try:
            async for p in source.delta_round(mailbox, window(), None):
                got.append(p)
        finally:
            await source.aclose()

    with pytest.raises(TransientError):
        asyncio.run(collect())

    assert len(sleeps.delays) == 2
    assert [p.delta_link for p in got] == [None]


def test_expired_access_token_is_refreshed_once(sim: Simulator) -> None:
    """Graph 401 for a cached token: one new token, the request succeeds."""
    mailbox = sim.users[0]
    source, _ = graph(sim)
    event_id = next(iter(ids(run_round(source, mailbox))))
    sim.identity.expire_access_tokens()

    async def fetch() -> Event | None:
        try:
            return await source.get_event(mailbox, event_id)
        finally:
            await source.aclose()

    event = asyncio.run(fetch())

    assert event is not None and event.id == event_id


def test_get_event_of_a_deleted_event_is_none(sim: Simulator) -> None:
    """get_event answers None for an event that no longer exists."""
    mailbox = sim.users[2]
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    gone = sim.calendar(mailbox).add_event(
        subject="Weg", start=start, end=start + timedelta(hours=1))
    sim.calendar(mailbox).delete_event(gone)
    source, _ = graph(sim)

    async def fetch() -> Event | None:
        try:
            return await source.get_event(mailbox, gone)
        finally:
            await source.aclose()

    assert asyncio.run(fetch()) is None


def test_parallel_reads_stay_within_the_mailbox_limit(sim: Simulator) -> None:
    """Twenty parallel reads of one mailbox: never more than 4 in flight, none 429."""
    mailbox = sim.users[2]
    event_ids = [e["id"] for e in sim.calendar(mailbox).events()][:20]
    sim.faults.latency["graph"] = 0.02
    source, sleeps = graph(sim)

    async def read_all() -> list[Event | None]:
        try:
            return await asyncio.gather(
                *(source.get_event(mailbox, i) for i in event_ids))
        finally:
            await source.aclose()

    try:
        events = asyncio.run(read_all())
    finally:
        sim.faults.latency["graph"] = 0.0

    assert all(e is not None for e in events)
    assert sim.stats.max_concurrent[mailbox.lower()] == 4
    assert sleeps.delays == []
