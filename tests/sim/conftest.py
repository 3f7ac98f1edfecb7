"""Fixtures: a running simulator on the default scenario and HTTP clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta

import httpx
import pytest

from syncd.sim import Simulator, load_scenario

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
CHIYO = "chiyo@contoso.example"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
IMMUTABLE = 'IdType="ImmutableId"'


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(load_scenario(None))
    simulator.start()
    yield simulator
    simulator.close()


@pytest.fixture
def anchor(sim: Simulator) -> date:
    """Day 0 of the scenario: the Monday two weeks before this week."""
    return sim.scenario.anchor_date(sim.clock().date())


def app_token(sim: Simulator) -> str:
    response = httpx.post(
        f"{sim.authority}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
            "scope": GRAPH_SCOPE,
        },
        verify=sim.ssl_context(),
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


@pytest.fixture
def graph(sim: Simulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {app_token(sim)}", "Prefer": IMMUTABLE}
    with httpx.Client(verify=sim.ssl_context(), headers=headers, timeout=10) as client:
        yield client


def delta_url(sim: Simulator, mailbox: str, start: date, days: int = 14) -> str:
    begin = datetime(start.year, start.month, start.day)
    end = begin + timedelta(days=days)
    return (
        f"{sim.graph_url}/users/{mailbox}/calendarView/delta"
        f"?startDateTime={begin.isoformat()}Z&endDateTime={end.isoformat()}Z"
    )


def whole_round(
    client: httpx.Client, url: str, prefer: str | None = None
) -> tuple[list[dict[str, object]], str, int]:
    """Every item of a round, its delta link and the number of pages."""
    headers = {"Prefer": prefer} if prefer else {}
    items: list[dict[str, object]] = []
    pages = 0
    while True:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        items.extend(page["value"])
        if "@odata.deltaLink" in page:
            return items, page["@odata.deltaLink"], pages
        url = page["@odata.nextLink"]
