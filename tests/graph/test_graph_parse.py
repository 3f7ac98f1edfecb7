"""Graph event JSON into syncd's model: times, zones, all-day, occurrences, removed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import structlog

from syncd.graph import parse_event, parse_page
from syncd.model import Event, EventType, Removed

FULL: dict[str, Any] = {
    "id": "AAMkAD=Ev1",
    "type": "singleInstance",
    "subject": "Kundentermin Müller",
    "categories": ["Apollo", "Track"],
    "sensitivity": "normal",
    "showAs": "busy",
    "responseStatus": {"response": "accepted", "time": "2025-01-10T08:00:00Z"},
    "isCancelled": False,
    "isAllDay": False,
    "organizer": {"emailAddress": {"name": "Bob", "address": "Bob@Contoso.Example"}},
    "attendees": [
        {"type": "required", "status": {"response": "accepted"},
         "emailAddress": {"name": "Alice", "address": "ALICE@contoso.example"}},
        {"type": "optional", "status": {"response": "none"},
         "emailAddress": {"name": "Carol", "address": "carol@Fabrikam.example"}},
    ],
    "location": {"displayName": "Room 1"},
    "originalStartTimeZone": "W. Europe Standard Time",
    "originalEndTimeZone": "W. Europe Standard Time",
    "start": {"dateTime": "2025-01-15T09:00:00.0000000", "timeZone": "UTC"},
    "end": {"dateTime": "2025-01-15T10:30:00.0000000", "timeZone": "UTC"},
    "body": {"contentType": "html", "content": "<p>secret agenda</p>"},
}


def test_full_event_is_normalised() -> None:
    """Every field of a single event lands in the model, addresses lower-cased."""
    event = parse_event(FULL)

    assert event == Event(
        id="AAMkAD=Ev1",
        type=EventType.SINGLE,
        start=datetime(2025, 1, 15, 9, 0, tzinfo=UTC),
        end=datetime(2025, 1, 15, 10, 30, tzinfo=UTC),
        is_all_day=False,
        subject="Kundentermin Müller",
        categories=("Apollo", "Track"),
        sensitivity="normal",
        show_as="busy",
        response="accepted",
        is_cancelled=False,
        organizer="bob@contoso.example",
        attendees=("alice@contoso.example", "carol@fabrikam.example"),
        location="Room 1",
        start_zone="W. Europe Standard Time",
    )


def test_windows_zone_is_converted_to_utc() -> None:
    """09:00 'W. Europe Standard Time' in January is 08:00 UTC."""
    raw = {**FULL, "start": {"dateTime": "2025-01-15T09:00:00.0000000",
                             "timeZone": "W. Europe Standard Time"},
           "end": {"dateTime": "2025-07-15T09:00:00.0000000",
                   "timeZone": "W. Europe Standard Time"}}

    event = parse_event(raw)

    assert event.start == datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
    assert event.end == datetime(2025, 7, 15, 7, 0, tzinfo=UTC)


def test_iana_zone_is_converted_to_utc() -> None:
    """09:00 America/New_York in January is 14:00 UTC."""
    raw = {**FULL, "start": {"dateTime": "2025-01-15T09:00:00.0000000",
                             "timeZone": "America/New_York"}}

    assert parse_event(raw).start == datetime(2025, 1, 15, 14, 0, tzinfo=UTC)


def test_unknown_zone_is_treated_as_utc_with_a_warning() -> None:
    """An unknown zone name never crashes: UTC, and a warning names the zone."""
    raw = {**FULL, "start": {"dateTime": "2025-01-15T09:00:00.0000000",
                             "timeZone": "Middle Earth Standard Time"}}

    with structlog.testing.capture_logs() as logs:
        event = parse_event(raw)

    assert event.start == datetime(2025, 1, 15, 9, 0, tzinfo=UTC)
    assert {"event": "graph_unknown_timezone", "log_level": "warning",
            "timezone": "Middle Earth Standard Time"} in logs


def test_all_day_event_has_date_bounds_without_zone_arithmetic() -> None:
    """All-day: midnight to midnight in any zone become plain dates, end exclusive."""
    raw = {**FULL, "isAllDay": True,
           "start": {"dateTime": "2025-01-15T00:00:00.0000000",
                     "timeZone": "Tokyo Standard Time"},
           "end": {"dateTime": "2025-01-16T00:00:00.0000000",
                   "timeZone": "Tokyo Standard Time"}}

    event = parse_event(raw)

    assert (event.start, event.end, event.is_all_day) == (
        date(2025, 1, 15), date(2025, 1, 16), True)


def test_bare_occurrence_leaves_missing_fields_none() -> None:
    """An occurrence with only id, type, master and times keeps the rest None."""
    raw = {"id": "occ-1", "type": "occurrence", "seriesMasterId": "master-1",
           "start": {"dateTime": "2025-01-16T09:00:00.0000000", "timeZone": "UTC"},
           "end": {"dateTime": "2025-01-16T09:15:00.0000000", "timeZone": "UTC"}}

    event = parse_event(raw)

    assert event.type is EventType.OCCURRENCE
    assert event.series_master_id == "master-1"
    assert (event.subject, event.categories, event.sensitivity, event.show_as,
            event.response, event.is_cancelled, event.organizer, event.attendees,
            event.location, event.is_all_day) == (None,) * 10


def test_empty_categories_are_an_empty_tuple_not_none() -> None:
    """An event that carries no categories says so: () rather than unknown."""
    assert parse_event({**FULL, "categories": []}).categories == ()


def test_page_parses_removed_and_links() -> None:
    """@removed items become Removed; next and delta links are kept verbatim."""
    body = {"value": [{"id": "gone-1", "@removed": {"reason": "deleted"}},
                      {"id": "gone-2", "@removed": {}}],
            "@odata.deltaLink": "https://g/v1.0/me/calendarView/delta?$deltatoken=a%3Db"}

    page = parse_page(body)

    assert page.items == [Removed("gone-1", "deleted"), Removed("gone-2", "deleted")]
    assert page.delta_link == "https://g/v1.0/me/calendarView/delta?$deltatoken=a%3Db"
    assert page.next_link is None


def test_malformed_item_is_logged_and_skipped() -> None:
    """One bad item does not kill the page: logged with its id, the rest parsed."""
    bad = {"id": "bad-1", "type": "singleInstance",
           "start": {"dateTime": "not a time", "timeZone": "UTC"},
           "end": {"dateTime": "2025-01-15T10:00:00.0000000", "timeZone": "UTC"}}
    body = {"value": [bad, {"type": "occurrence"}, "junk", FULL],
            "@odata.nextLink": "https://g/next"}

    with structlog.testing.capture_logs() as logs:
        page = parse_page(body, mailbox="alice@contoso.example")

    assert [item.id for item in page.items] == ["AAMkAD=Ev1"]
    malformed = [e for e in logs if e["event"] == "graph_event_malformed"]
    assert [e["event_id"] for e in malformed] == ["bad-1", None, None]
    assert all(e["log_level"] == "warning" for e in malformed)
