"""The simulated plain calendarView: the whole window on every request, paged."""

from __future__ import annotations

from datetime import date

import httpx

from syncd.sim import Simulator
from tests.sim.conftest import ALICE, IMMUTABLE, delta_url, whole_round


def view_url(sim: Simulator, anchor: date) -> str:
    return delta_url(sim, ALICE, anchor).replace("calendarView/delta", "calendarView")


def all_pages(
    client: httpx.Client, url: str, prefer: str
) -> tuple[list[dict[str, object]], int]:
    items: list[dict[str, object]] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url, headers={"Prefer": prefer})
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        items.extend(body["value"])
        assert "@odata.deltaLink" not in body
        next_url = body.get("@odata.nextLink")
    return items, pages


def test_view_pages_with_skip_and_holds_every_instance(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Alice's fortnight: 12 singles, 8 occurrences, 1 exception, no master;
    pages of 5 mean 5 requests, the next links absolute with ``$skip``."""
    items, pages = all_pages(
        graph, view_url(sim, anchor), f"{IMMUTABLE}, odata.maxpagesize=5"
    )

    kinds = [i["type"] for i in items]
    assert len(items) == 21 == len({i["id"] for i in items})
    assert pages == 5
    assert kinds.count("seriesMaster") == 0
    assert kinds.count("occurrence") == 8


def test_view_items_carry_full_values(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Unlike delta, an occurrence in the plain view has subject and categories."""
    items, _ = all_pages(graph, view_url(sim, anchor), IMMUTABLE)

    occurrence = next(i for i in items if i["type"] == "occurrence")
    assert occurrence["subject"] == "Daily Stand-up"
    assert occurrence["categories"] == ["Internal"]


def test_view_rereads_everything_while_delta_is_quiet(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """A second view returns the window again; the delta link returns nothing."""
    sim.faults.delta_duplicates = False
    _, link, _ = whole_round(graph, delta_url(sim, ALICE, anchor), IMMUTABLE)

    again, _ = all_pages(graph, view_url(sim, anchor), IMMUTABLE)
    quiet, _, pages = whole_round(graph, link, IMMUTABLE)

    assert len(again) == 21
    assert (quiet, pages) == ([], 1)


def test_view_default_page_size_is_the_scenario_setting(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Without $top or maxpagesize a page holds the scenario's 10 items."""
    first = graph.get(view_url(sim, anchor)).json()

    assert len(first["value"]) == 10
    assert "$skip=10" in first["@odata.nextLink"]
