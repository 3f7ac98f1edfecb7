"""The simulated Graph calendar: delta rounds, paging, ids, errors, throttling."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from syncd.sim import Simulator
from tests.sim.conftest import ALICE, BOB, IMMUTABLE, app_token, delta_url, whole_round

BERLIN = ZoneInfo("Europe/Berlin")


def at(anchor: date, day: int, clock: str, zone: ZoneInfo = BERLIN) -> datetime:
    moment = datetime.combine(
        anchor + timedelta(days=day), time.fromisoformat(clock), zone
    )
    return moment.astimezone(UTC)


def ids(items: list[dict[str, object]]) -> set[str]:
    return {str(i["id"]) for i in items}


def test_initial_round_holds_the_fortnight(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Alice's fortnight: 12 single events, the stand-up master, 8 occurrences
    and 1 exception (one occurrence deleted)."""
    sim.faults.delta_duplicates = False

    items, _, pages = whole_round(
        graph, delta_url(sim, ALICE, anchor), f"{IMMUTABLE}, odata.maxpagesize=5"
    )

    kinds = [i["type"] for i in items]
    assert len(items) == 22
    assert pages == 5
    assert kinds.count("singleInstance") == 12
    assert kinds.count("seriesMaster") == 1
    assert kinds.count("occurrence") == 8
    assert kinds.count("exception") == 1


def test_pages_honour_maxpagesize_and_links_are_absolute(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Each page has at most N items and an absolute https link to the next."""
    first = graph.get(
        delta_url(sim, ALICE, anchor),
        headers={"Prefer": f"odata.maxpagesize=3, {IMMUTABLE}"},
    ).json()

    assert len(first["value"]) == 3
    assert first["@odata.nextLink"].startswith(
        f"{sim.graph_url}/users/{ALICE}/calendarView/delta?$skiptoken="
    )


def test_default_round_repeats_some_items(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """With duplicates on (the default) an item appears twice in one round."""
    items, _, _ = whole_round(graph, delta_url(sim, ALICE, anchor))

    assert len(items) > len(ids(items)) == 22


def test_occurrences_are_bare_exceptions_full(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Occurrences carry only id, type, seriesMasterId, start and end."""
    items, _, _ = whole_round(graph, delta_url(sim, ALICE, anchor))

    occurrence = next(i for i in items if i["type"] == "occurrence")
    exception = next(i for i in items if i["type"] == "exception")
    master = next(i for i in items if i["type"] == "seriesMaster")
    assert set(occurrence) - {"@odata.type"} == {
        "id",
        "type",
        "seriesMasterId",
        "start",
        "end",
    }
    assert exception["subject"] == "Daily Stand-up (Sprint-Review-Vorbereitung)"
    assert exception["categories"] == ["Internal"]
    assert exception["start"]["dateTime"] == at(anchor, 2, "10:00").strftime(
        "%Y-%m-%dT%H:%M:%S.0000000"
    )
    assert master["recurrence"]["pattern"]["daysOfWeek"][0] == "monday"


def test_times_are_utc_with_seven_digits(sim: Simulator, graph: httpx.Client) -> None:
    """Bob's call created in Los Angeles keeps its zone name; times are UTC."""
    event = graph.get(
        f"{sim.graph_url}/users/{ALICE}/events/{sim.event_id(ALICE, 'zephyr-call-la')}"
    ).json()
    anchor = sim.scenario.anchor_date(sim.clock().date())

    start = at(anchor, 3, "08:00", ZoneInfo("America/Los_Angeles"))
    assert event["start"] == {
        "dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"),
        "timeZone": "UTC",
    }
    assert event["originalStartTimeZone"] == "Pacific Standard Time"
    assert event["responseStatus"]["response"] == "tentativelyAccepted"


def test_all_day_event_is_midnight_to_midnight(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Bob's two-day vacation runs from midnight to midnight two days later."""
    event = graph.get(
        f"{sim.graph_url}/users/{BOB}/events/{sim.event_id(BOB, 'vacation')}"
    ).json()

    day = anchor + timedelta(days=9)
    assert event["isAllDay"] is True
    assert event["start"]["dateTime"] == f"{day.isoformat()}T00:00:00.0000000"
    assert event["end"]["dateTime"] == (
        f"{(day + timedelta(days=2)).isoformat()}T00:00:00.0000000"
    )


def test_next_round_brings_only_changes(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Added and edited events come in full, a deleted one as @removed."""
    _, link, _ = whole_round(graph, delta_url(sim, ALICE, anchor))
    calendar = sim.calendar(ALICE)
    added = calendar.add_event(
        subject="Neu",
        start=at(anchor, 10, "16:00"),
        end=at(anchor, 10, "17:00"),
        categories=["Apollo"],
    )
    calendar.update_event(sim.event_id(ALICE, "focus-time"), subject="Fokus!")
    calendar.delete_event(sim.event_id(ALICE, "lunch"))

    items, _, _ = whole_round(graph, link)

    removed = [i["id"] for i in items if "@removed" in i]
    changed = {i["id"]: i for i in items if "@removed" not in i}
    assert removed == [sim.event_id(ALICE, "lunch")]
    assert set(changed) == {added, sim.event_id(ALICE, "focus-time")}
    assert changed[sim.event_id(ALICE, "focus-time")]["subject"] == "Fokus!"


def test_quiet_round_is_empty(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Nothing changed: one empty page with a new delta link."""
    _, link, _ = whole_round(graph, delta_url(sim, ALICE, anchor))

    items, second_link, pages = whole_round(graph, link)

    assert (items, pages) == ([], 1)
    assert "$deltatoken=" in second_link


def test_deleted_occurrence_vanishes_without_removed(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Deleting one stand-up re-sends the series minus that occurrence."""
    _, link, _ = whole_round(graph, delta_url(sim, ALICE, anchor))
    series = sim.event_id(ALICE, "standup")
    gone = sim.calendar(ALICE).delete_occurrence(series, at(anchor, 8, "09:30"))

    items, _, _ = whole_round(graph, link)

    assert not [i for i in items if "@removed" in i]
    assert gone not in ids(items)
    assert [i["type"] for i in items].count("seriesMaster") == 1
    assert len(ids(items)) == 1 + 8


def test_removed_reported_outside_the_window(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """A deleted event far outside the window still arrives as @removed."""
    calendar = sim.calendar(ALICE)
    old = calendar.add_event(
        subject="Alt", start=at(anchor, -40, "10:00"), end=at(anchor, -40, "11:00")
    )
    _, link, _ = whole_round(graph, delta_url(sim, ALICE, anchor))
    calendar.delete_event(old)

    items, _, _ = whole_round(graph, link)

    assert items == [
        {
            "@odata.type": "#microsoft.graph.event",
            "id": old,
            "@removed": {"reason": "deleted"},
        }
    ]


def test_event_moved_out_of_window_is_removed(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Moving an event out of the window reports it @removed; GET still finds it."""
    _, link, _ = whole_round(graph, delta_url(sim, ALICE, anchor))
    doctor = sim.event_id(ALICE, "doctor")
    sim.calendar(ALICE).update_event(
        doctor, start=at(anchor, 30, "08:00"), end=at(anchor, 30, "09:00")
    )

    items, _, _ = whole_round(graph, link)

    assert [i["id"] for i in items if "@removed" in i] == [doctor]
    assert (
        graph.get(f"{sim.graph_url}/users/{ALICE}/events/{doctor}").status_code == 200
    )


def test_default_ids_differ_and_are_counted(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """Without the ImmutableId preference other ids come back, and GET takes them."""
    immutable, _, _ = whole_round(graph, delta_url(sim, ALICE, anchor))

    default, _, _ = whole_round(
        graph, delta_url(sim, ALICE, anchor), "odata.maxpagesize=50"
    )

    assert ids(default).isdisjoint(ids(immutable))
    assert sim.stats.without_immutable_id == 1
    some = next(i for i in default if i["type"] == "singleInstance")
    got = graph.get(f"{sim.graph_url}/users/{ALICE}/events/{some['id']}").json()
    assert got["id"] in ids(immutable)


def test_ids_are_case_sensitive(sim: Simulator, graph: httpx.Client) -> None:
    """An id with its letter case changed names no event."""
    event_id = sim.event_id(ALICE, "lunch")

    response = graph.get(f"{sim.graph_url}/users/{ALICE}/events/{event_id.swapcase()}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ErrorItemNotFound"


@pytest.mark.parametrize(
    "code", ["SyncStateNotFound", "syncStateNotFound", "resyncRequired"]
)
def test_expired_delta_link_is_gone(
    sim: Simulator, graph: httpx.Client, anchor: date, code: str
) -> None:
    """After expire_delta the old link answers 410 with the chosen code."""
    _, link, _ = whole_round(graph, delta_url(sim, ALICE, anchor))
    sim.faults.expire_delta(ALICE, code)

    response = graph.get(link)

    assert response.status_code == 410
    assert response.json()["error"]["code"] == code


def test_unknown_skiptoken_is_gone(sim: Simulator, graph: httpx.Client) -> None:
    """A state token the server never issued answers 410."""
    response = graph.get(
        f"{sim.graph_url}/users/{ALICE}/calendarView/delta?$skiptoken=forgotten"
    )

    assert response.status_code == 410


@pytest.mark.parametrize(("knob", "header"), [(2, "2"), (0.5, "0.5"), (None, None)])
def test_throttle_retry_after_forms(
    sim: Simulator, graph: httpx.Client, knob: float | None, header: str | None
) -> None:
    """429 carries Retry-After as integer, fraction, or not at all."""
    sim.faults.throttle_graph(1, retry_after=knob)

    response = graph.get(f"{sim.graph_url}/users/{ALICE}/events/x")

    assert response.status_code == 429
    assert response.headers.get("Retry-After") == header
    assert response.json()["error"]["code"] == "ApplicationThrottled"


def test_throttle_retry_after_http_date(sim: Simulator, graph: httpx.Client) -> None:
    """Retry-After may be an HTTP date a few seconds ahead."""
    sim.faults.throttle_graph(1, retry_after="date")

    response = graph.get(f"{sim.graph_url}/users/{ALICE}/events/x")

    moment = parsedate_to_datetime(response.headers["Retry-After"])
    assert timedelta(0) < moment - datetime.now(UTC) <= timedelta(seconds=3)
    assert graph.get(f"{sim.graph_url}/users/{ALICE}/events/x").status_code == 404


def test_fifth_concurrent_request_is_throttled(sim: Simulator) -> None:
    """With latency, 6 parallel requests for one mailbox: 4 served, 2 get 429."""
    sim.faults.latency["graph"] = 0.4
    token = app_token(sim)
    url = f"{sim.graph_url}/users/{ALICE}/events/{sim.event_id(ALICE, 'lunch')}"

    def fetch(_: int) -> int:
        with httpx.Client(verify=sim.ssl_context()) as client:
            return client.get(
                url, headers={"Authorization": f"Bearer {token}", "Prefer": IMMUTABLE}
            ).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(fetch, range(6)))

    assert statuses == [200, 200, 200, 200, 429, 429]
    assert sim.stats.max_concurrent[ALICE] == 5  # 4 in flight plus one refused


def test_gateway_error_mid_round_then_same_page(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """A 503 on a continuation page; replaying the same link gives the page."""
    first = graph.get(delta_url(sim, ALICE, anchor)).json()
    sim.faults.fail_graph(503)

    failed = graph.get(first["@odata.nextLink"])
    retried = graph.get(first["@odata.nextLink"])
    again = graph.get(first["@odata.nextLink"])

    assert failed.status_code == 503
    assert retried.status_code == 200
    assert retried.json()["value"] == again.json()["value"]


def test_empty_pages_knob(sim: Simulator, graph: httpx.Client, anchor: date) -> None:
    """delta_empty_pages=2 starts a round with two empty pages with nextLinks."""
    sim.faults.delta_empty_pages = 2

    first = graph.get(delta_url(sim, ALICE, anchor)).json()
    second = graph.get(first["@odata.nextLink"]).json()
    third = graph.get(second["@odata.nextLink"]).json()

    assert first["value"] == second["value"] == []
    assert len(third["value"]) == 10


@pytest.mark.parametrize(
    "query",
    [
        "startDateTime=2025-01-01T00:00:00&endDateTime=2025-02-01T00:00:00Z",
        "startDateTime=2025-01-01T00:00:00Z",
        "startDateTime=2025-01-01T00:00:00Z&endDateTime=2025-02-01T00:00:00Z"
        "&$select=subject",
    ],
)
def test_bad_delta_requests_are_400(
    sim: Simulator, graph: httpx.Client, query: str
) -> None:
    """A window without offset, a missing bound, or $select: 400."""
    response = graph.get(f"{sim.graph_url}/users/{ALICE}/calendarView/delta?{query}")

    assert response.status_code == 400


def test_missing_token_is_401(sim: Simulator) -> None:
    """No bearer token: 401 InvalidAuthenticationToken."""
    response = httpx.get(
        f"{sim.graph_url}/users/{ALICE}/events/x", verify=sim.ssl_context()
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_unknown_mailbox_is_404(sim: Simulator, graph: httpx.Client) -> None:
    """A mailbox outside the scenario is ErrorInvalidUser."""
    response = graph.get(f"{sim.graph_url}/users/mallory@contoso.example/events/x")

    assert response.json()["error"]["code"] == "ErrorInvalidUser"
