"""Graph wire semantics the core relies on: sync-state codes, zones, all-day dates."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx
import pytest

from syncd.errors import DeltaExpired
from syncd.graph import classify, parse_event


def _response(status: int, code: str) -> httpx.Response:
    request = httpx.Request("GET", "https://graph.example/v1.0/me/calendarView/delta")
    return httpx.Response(status, json={"error": {"code": code, "message": "x"}},
                          request=request)


@pytest.mark.parametrize(("status", "code"), [
    (410, "SyncStateNotFound"), (410, "syncStateNotFound"), (410, "resyncRequired"),
    (400, "resyncRequired"), (400, "SYNCSTATENOTFOUND"), (410, "somethingElse"),
])
def test_sync_state_errors_expire_the_delta_link(status: int, code: str) -> None:
    """410, or a sync-state code in any letter case, means: start a new round."""
    assert isinstance(classify(_response(status, code), mailbox="a@b.example"),
                      DeltaExpired)


def _raw(start: str, end: str, zone: str, **fields: object) -> dict[str, object]:
    return {"id": "AAMkEv1", "type": "singleInstance",
            "start": {"dateTime": start, "timeZone": zone},
            "end": {"dateTime": end, "timeZone": zone}, **fields}


def test_windows_zone_names_are_understood() -> None:
    """"W. Europe Standard Time" 09:00 in March is 08:00 UTC."""
    event = parse_event(_raw("2026-03-16T09:00:00.0000000",
                             "2026-03-16T10:00:00.0000000", "W. Europe Standard Time"))

    assert event.start == datetime(2026, 3, 16, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("zone", ["tzone://Microsoft/Custom", "Customized Time Zone",
                                  "Europe", "", "../../etc/passwd"])
def test_unknown_zone_names_never_crash(zone: str) -> None:
    """An unknown zone name is read as UTC instead of failing the pass."""
    event = parse_event(_raw("2026-03-16T09:00:00.0000000",
                             "2026-03-16T10:00:00.0000000", zone))

    assert event.start == datetime(2026, 3, 16, 9, 0, tzinfo=UTC)


def test_all_day_events_are_dates_without_zone_arithmetic() -> None:
    """An all-day event in Tokyo time stays on its calendar dates."""
    event = parse_event(_raw("2026-03-16T00:00:00.0000000",
                             "2026-03-17T00:00:00.0000000", "Tokyo Standard Time",
                             isAllDay=True))

    assert (event.start, event.end) == (date(2026, 3, 16), date(2026, 3, 17))
