"""Put a scenario's events into calendars, relative to today's date."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from syncd.sim.calendar import Calendar
from syncd.sim.scenario import EventSpec, Scenario, User

JSON = dict[str, Any]


def place_scenario(
    scenario: Scenario, calendars: dict[str, Calendar], today: date
) -> dict[tuple[str, str], str]:
    """Create every scenario event; returns (mailbox, event key) -> event id."""
    anchor = scenario.anchor_date(today)
    created = datetime.combine(anchor - timedelta(days=10), time(8, 0), ZoneInfo("UTC"))
    ids: dict[tuple[str, str], str] = {}
    for spec in scenario.events:
        for key in spec.calendars:
            user = scenario.user(key)
            calendar = calendars[user.mailbox.lower()]
            event_id = _place(spec, scenario, user, calendar, anchor, created)
            ids[(user.mailbox.lower(), spec.key)] = event_id
    return ids


def _place(
    spec: EventSpec,
    scenario: Scenario,
    user: User,
    calendar: Calendar,
    anchor: date,
    created: datetime,
) -> str:
    zone = spec.timezone or scenario.user(spec.organizer).timezone
    start, end = _moments(
        spec, spec.day, spec.end_day, spec.start, spec.end, anchor, zone
    )
    values = _values(spec, scenario, user)
    common: JSON = {
        "subject": values.pop("subject"),
        "start": start,
        "end": end,
        "time_zone": zone,
        "is_all_day": spec.all_day,
        "created": created,
    }
    if spec.recurrence is None:
        return calendar.add_event(**common, **values)
    series_id = calendar.add_series(
        **common,
        **values,
        days=spec.recurrence.days,
        interval_weeks=spec.recurrence.interval_weeks,
        until=anchor + timedelta(days=spec.recurrence.until_day),
    )
    _apply_exceptions(spec, calendar, series_id, anchor, zone, start)
    return series_id


def _apply_exceptions(
    spec: EventSpec,
    calendar: Calendar,
    series_id: str,
    anchor: date,
    zone: str,
    first: datetime | date,
) -> None:
    clock_time = (
        first.astimezone(ZoneInfo(zone)).time()
        if isinstance(first, datetime)
        else time(0)
    )
    for raw in spec.exceptions:
        day = int(raw["day"])
        original = datetime.combine(
            anchor + timedelta(days=day), clock_time, ZoneInfo(zone)
        )
        occurrence_id = _occurrence_at(calendar, series_id, original)
        changes = {k: v for k, v in raw.items() if k not in ("day", "start", "end")}
        if "start" in raw:
            changes["start"], changes["end"] = _moments(
                spec, day, day, _t(raw["start"]), _t(raw["end"]), anchor, zone
            )
        calendar.update_event(occurrence_id, **changes)
    for day in spec.deleted_days:
        original = datetime.combine(
            anchor + timedelta(days=day), clock_time, ZoneInfo(zone)
        )
        calendar.delete_occurrence(series_id, original)


def _occurrence_at(calendar: Calendar, series_id: str, original: datetime) -> str:
    for event in calendar.view(
        original - timedelta(minutes=1), original + timedelta(minutes=1)
    ):
        if event.get("seriesMasterId") == series_id:
            return str(event["id"])
    raise ValueError(f"series has no occurrence at {original.isoformat()}")


def _moments(
    spec: EventSpec,
    day: int,
    end_day: int,
    start: time | None,
    end: time | None,
    anchor: date,
    zone: str,
) -> tuple[datetime | date, datetime | date]:
    first, last = anchor + timedelta(days=day), anchor + timedelta(days=end_day)
    if spec.all_day or start is None or end is None:
        return first, last
    tz = ZoneInfo(zone)
    return datetime.combine(first, start, tz), datetime.combine(last, end, tz)


def _values(spec: EventSpec, scenario: Scenario, user: User) -> JSON:
    organizer = scenario.user(spec.organizer)
    overrides = spec.per_user.get(user.key, {})
    values: JSON = {"subject": spec.subject, **spec.fields, **overrides}
    is_organizer = user.key == organizer.key
    values.setdefault("response", "organizer" if is_organizer else "accepted")
    values["organizer"] = {"name": organizer.name, "address": organizer.mailbox}
    values["attendees"] = [
        _attendee(scenario, key, spec) for key in spec.calendars if key != organizer.key
    ] + list(spec.fields.get("attendees", []))
    return values


def _attendee(scenario: Scenario, key: str, spec: EventSpec) -> JSON:
    user = scenario.user(key)
    response = spec.per_user.get(key, {}).get(
        "response", spec.fields.get("response", "accepted")
    )
    return {
        "address": user.mailbox,
        "name": user.name,
        "response": response,
        "type": "required",
    }


def _t(value: Any) -> time:
    if isinstance(value, int):
        return time(value // 60, value % 60)
    return time.fromisoformat(str(value))
