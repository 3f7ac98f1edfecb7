"""One simulated Outlook calendar: events, series, exceptions, change history.

Every change bumps the calendar's version; an item remembers the version of
its last change (or of its deletion), which is what delta rounds compare
against.  Times are stored as aware UTC datetimes; a series expands in the
zone it was created in, so its local time survives a DST change.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from syncd.sim.scenario import WEEKDAYS, weekday_index

Clock = Callable[[], datetime]
JSON = dict[str, Any]

WINDOWS_ZONES = {
    "UTC": "UTC",
    "Etc/UTC": "UTC",
    "Europe/Berlin": "W. Europe Standard Time",
    "Europe/Vienna": "W. Europe Standard Time",
    "Europe/Zurich": "W. Europe Standard Time",
    "Europe/Amsterdam": "W. Europe Standard Time",
    "Europe/London": "GMT Standard Time",
    "Europe/Paris": "Romance Standard Time",
    "America/New_York": "Eastern Standard Time",
    "America/Chicago": "Central Standard Time",
    "America/Los_Angeles": "Pacific Standard Time",
    "Asia/Tokyo": "Tokyo Standard Time",
    "Asia/Kolkata": "India Standard Time",
    "Australia/Sydney": "AUS Eastern Standard Time",
}
_ID_PREFIX = "AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OABGAAAAAAA"
_DEFAULT_ID_PREFIX = "AAMkADQ0ZjRmYzE3LWM4NjktNGM0Ni05OWQ5LWU0ZGY4ZDAzZDQ2OABGAAAAAAB"
_OCCURRENCE_PREFIX = "AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OAFRAAgI"

_VALUE_DEFAULTS: JSON = {
    "subject": "",
    "categories": [],
    "show_as": "busy",
    "sensitivity": "normal",
    "response": "organizer",
    "is_cancelled": False,
    "location": "",
    "body": "",
    "importance": "normal",
    "organizer": None,
    "attendees": [],
}
_TIME_FIELDS = {"start", "end", "time_zone", "is_all_day"}


class EventNotFound(KeyError):
    """No event (or occurrence) with that id in this calendar."""


def graph_time(moment: datetime) -> JSON:
    """Graph's dateTimeTimeZone in UTC: seven fractional digits, no offset."""
    utc = moment.astimezone(UTC)
    return {
        "dateTime": utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0",
        "timeZone": "UTC",
    }


def graph_instant(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"


def windows_zone(zone: str) -> str:
    return WINDOWS_ZONES.get(zone, zone)


@dataclass
class _Exception:
    """A modified occurrence: its own times and the values it overrides."""

    start: datetime
    end: datetime
    values: JSON
    modified: datetime
    change: int


@dataclass
class _Item:
    id: str
    start: datetime
    end: datetime
    zone: str
    all_day: bool
    values: JSON
    created: datetime
    modified: datetime
    version: int
    change: int = 1
    ical_uid: str = ""
    days: tuple[int, ...] = ()  # weekday numbers of a weekly series
    interval_weeks: int = 1
    until: date | None = None  # last local date of a series
    exceptions: dict[datetime, _Exception] = field(default_factory=dict)
    cancelled: set[datetime] = field(default_factory=set)
    deleted_version: int | None = None

    @property
    def is_series(self) -> bool:
        return bool(self.days)


@dataclass(frozen=True)
class Occurrence:
    """One instance of a series, as placed in time."""

    id: str
    master: _Item
    original_start: datetime
    start: datetime
    end: datetime
    exception: _Exception | None


class Calendar:
    """One mailbox's calendar.  Every public method is thread-safe."""

    def __init__(self, mailbox: str, *, clock: Clock, seed: str) -> None:
        self.mailbox = mailbox
        self._clock = clock
        self._lock = threading.RLock()
        self._rng = random.Random(f"{seed}:{mailbox.lower()}")
        self._items: dict[str, _Item] = {}
        self._occurrence_ids: dict[str, tuple[str, datetime]] = {}
        self._default_ids: dict[str, str] = {}
        self._version = 0
        self.listeners: list[Callable[[], None]] = []

    # ----- identities -------------------------------------------------

    def new_id(self) -> str:
        raw = bytes(self._rng.getrandbits(8) for _ in range(48))
        return _ID_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii")

    def default_id(self, immutable_id: str) -> str:
        """The (mutable) default id Graph shows without the ImmutableId header."""
        digest = hashlib.sha256(b"default:" + immutable_id.encode()).digest()
        default = _DEFAULT_ID_PREFIX + base64.urlsafe_b64encode(digest).decode()
        with self._lock:
            self._default_ids[default] = immutable_id
        return default

    def resolve(self, any_id: str) -> str:
        """The immutable id behind a default or immutable id (case-sensitive)."""
        with self._lock:
            return self._default_ids.get(any_id, any_id)

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    # ----- changes ----------------------------------------------------

    def add_event(
        self,
        *,
        subject: str,
        start: datetime | date | str,
        end: datetime | date | str,
        time_zone: str = "UTC",
        is_all_day: bool = False,
        id: str | None = None,
        created: datetime | None = None,
        **values: Any,
    ) -> str:
        """Add a single event; returns its immutable id."""
        return self._add(
            subject, start, end, time_zone, is_all_day, id, created, values, series=None
        )

    def add_series(
        self,
        *,
        subject: str,
        start: datetime | date | str,
        end: datetime | date | str,
        days: Iterable[str] = WEEKDAYS[:5],
        until: date | str,
        interval_weeks: int = 1,
        time_zone: str = "UTC",
        is_all_day: bool = False,
        id: str | None = None,
        created: datetime | None = None,
        **values: Any,
    ) -> str:
        """Add a weekly series (``start``/``end`` of its first occurrence)."""
        weekdays = tuple(sorted(weekday_index(d) for d in days))
        last = until if isinstance(until, date) else date.fromisoformat(until)
        return self._add(
            subject,
            start,
            end,
            time_zone,
            is_all_day,
            id,
            created,
            values,
            series=(weekdays, interval_weeks, last),
        )

    def update_event(self, event_id: str, **fields: Any) -> None:
        """Change a single event, a series master, or one occurrence."""
        with self._lock:
            target = self._locate(event_id)
            if isinstance(target, Occurrence):
                self._update_occurrence(target, fields)
            else:
                self._update_item(target, fields)
            self._notify()

    def delete_event(self, event_id: str) -> None:
        """Delete an event or series; for an occurrence id, that occurrence."""
        with self._lock:
            target = self._locate(event_id)
            if isinstance(target, Occurrence):
                self._cancel_occurrence(target.master, target.original_start)
            else:
                target.deleted_version = self._bump()
                target.modified = self._clock()
            self._notify()

    def delete_occurrence(self, series_id: str, occurrence_start: datetime) -> str:
        """Delete the occurrence originally starting at ``occurrence_start``."""
        with self._lock:
            master = self._live_item(self.resolve(series_id))
            wanted = occurrence_start.astimezone(UTC)
            for occurrence in self._expand(master):
                if wanted in (occurrence.original_start, occurrence.start):
                    self._cancel_occurrence(master, occurrence.original_start)
                    self._notify()
                    return occurrence.id
        raise EventNotFound(f"no occurrence at {occurrence_start.isoformat()}")

    def add_category(self, event_id: str, category: str) -> None:
        """Add one category (InLoox's tagEvent); a no-op when present."""
        with self._lock:
            current = self.get(event_id)["categories"]
            if category not in current:
                self.update_event(event_id, categories=[*current, category])

    # ----- reading ----------------------------------------------------

    def events(self) -> list[JSON]:
        """Stored items now: single events and series masters (full JSON)."""
        with self._lock:
            return [self._item_json(i) for i in self._live_items()]

    def view(self, start: datetime, end: datetime) -> list[JSON]:
        """calendarView: singles, occurrences and exceptions overlapping
        ``[start, end)``, every one with its full values."""
        with self._lock:
            out: list[JSON] = []
            for item in self._live_items():
                if not item.is_series:
                    if _overlaps(item.start, item.end, start, end):
                        out.append(self._item_json(item))
                    continue
                out.extend(
                    self._occurrence_json(o)
                    for o in self._expand(item)
                    if _overlaps(o.start, o.end, start, end)
                )
            return sorted(out, key=lambda e: e["start"]["dateTime"])

    def get(self, event_id: str) -> JSON:
        """The event as GET /events/{id} shows it (any id form)."""
        with self._lock:
            target = self._locate(event_id)
            if isinstance(target, Occurrence):
                return self._occurrence_json(target)
            return self._item_json(target)

    def delta(
        self, start: datetime, end: datetime, since: int | None
    ) -> tuple[list[JSON], int]:
        """The items of a delta round over the window, and its watermark.

        ``since`` None: everything in the window.  Otherwise what changed
        after that version: changed events, series (master plus occurrences
        in the window), and ``@removed`` for deleted items or items that left
        the window.  A deleted occurrence just goes missing from its series.
        """
        with self._lock:
            out: list[JSON] = []
            for item in self._items.values():
                out.extend(self._delta_item(item, start, end, since))
            return out, self._version

    # ----- internals: changes -----------------------------------------

    def _add(
        self,
        subject: str,
        start: datetime | date | str,
        end: datetime | date | str,
        zone: str,
        all_day: bool,
        item_id: str | None,
        created: datetime | None,
        values: JSON,
        series: tuple[tuple[int, ...], int, date] | None,
    ) -> str:
        _check_values(values)
        begin, finish = _bounds(start, end, zone, all_day)
        with self._lock:
            now = created or self._clock()
            new_id = item_id or self.new_id()
            item = _Item(
                id=new_id,
                start=begin,
                end=finish,
                zone=zone,
                all_day=all_day,
                values={**copy.deepcopy(_VALUE_DEFAULTS), **values, "subject": subject},
                created=now,
                modified=now,
                version=self._bump(),
                ical_uid=_ical_uid(new_id),
            )
            if series is not None:
                item.days, item.interval_weeks, item.until = series
            self._items[new_id] = item
            self._notify()
            return new_id

    def _update_item(self, item: _Item, fields: JSON) -> None:
        times = {k: fields.pop(k) for k in list(fields) if k in _TIME_FIELDS}
        _check_values(fields)
        if times:
            if item.is_series:
                raise ValueError("move a series by its occurrences, not its master")
            zone = times.get("time_zone", item.zone)
            all_day = bool(times.get("is_all_day", item.all_day))
            item.start, item.end = _bounds(
                times.get("start", item.start),
                times.get("end", item.end),
                zone,
                all_day,
            )
            item.zone, item.all_day = zone, all_day
        item.values.update(copy.deepcopy(fields))
        self._touch(item)

    def _update_occurrence(self, occurrence: Occurrence, fields: JSON) -> None:
        master = occurrence.master
        exception = occurrence.exception or _Exception(
            start=occurrence.start,
            end=occurrence.end,
            values={},
            modified=self._clock(),
            change=0,
        )
        if "start" in fields or "end" in fields:
            exception.start, exception.end = _bounds(
                fields.pop("start", exception.start),
                fields.pop("end", exception.end),
                fields.pop("time_zone", master.zone),
                master.all_day,
            )
        _check_values(fields)
        exception.values.update(copy.deepcopy(fields))
        exception.modified = self._clock()
        exception.change += 1
        master.exceptions[occurrence.original_start] = exception
        self._touch(master)

    def _cancel_occurrence(self, master: _Item, original_start: datetime) -> None:
        master.cancelled.add(original_start)
        master.exceptions.pop(original_start, None)
        self._touch(master)

    def _touch(self, item: _Item) -> None:
        item.version = self._bump()
        item.modified = self._clock()
        item.change += 1

    def _bump(self) -> int:
        self._version += 1
        return self._version

    def _notify(self) -> None:
        for listener in self.listeners:
            listener()

    # ----- internals: lookup and expansion ----------------------------

    def _live_items(self) -> list[_Item]:
        return [i for i in self._items.values() if i.deleted_version is None]

    def _live_item(self, item_id: str) -> _Item:
        item = self._items.get(item_id)
        if item is None or item.deleted_version is not None:
            raise EventNotFound(item_id)
        return item

    def _locate(self, event_id: str) -> _Item | Occurrence:
        wanted = self.resolve(event_id)
        if wanted in self._items:
            return self._live_item(wanted)
        if wanted not in self._occurrence_ids:
            self._expand_all()
        if wanted not in self._occurrence_ids:
            raise EventNotFound(event_id)
        master_id, original = self._occurrence_ids[wanted]
        master = self._live_item(master_id)
        for occurrence in self._expand(master):
            if occurrence.original_start == original:
                return occurrence
        raise EventNotFound(event_id)

    def _expand_all(self) -> None:
        for item in self._live_items():
            if item.is_series:
                self._expand(item)

    def _expand(
        self, master: _Item, *, with_cancelled: bool = False
    ) -> list[Occurrence]:
        out = []
        duration = master.end - master.start
        for original in _series_starts(master):
            occurrence_id = self._occurrence_id(master.id, original)
            if original in master.cancelled and not with_cancelled:
                continue
            exception = master.exceptions.get(original)
            start = exception.start if exception else original
            end = exception.end if exception else original + duration
            out.append(
                Occurrence(occurrence_id, master, original, start, end, exception)
            )
        return out

    def _occurrence_id(self, master_id: str, original: datetime) -> str:
        seed = f"{master_id}|{original.isoformat()}".encode()
        digest = hashlib.sha256(seed).digest() + hashlib.sha1(seed).digest()
        occurrence_id = _OCCURRENCE_PREFIX + base64.urlsafe_b64encode(digest).decode()
        self._occurrence_ids[occurrence_id] = (master_id, original)
        return occurrence_id

    # ----- internals: delta -------------------------------------------

    def _delta_item(
        self, item: _Item, start: datetime, end: datetime, since: int | None
    ) -> list[JSON]:
        if item.deleted_version is not None:
            if since is None or item.deleted_version <= since:
                return []
            return self._removed_with_occurrences(item, start, end)
        if since is not None and item.version <= since:
            return []
        if not item.is_series:
            if _overlaps(item.start, item.end, start, end):
                return [self._item_json(item)]
            return [] if since is None else [_removed(item.id)]
        occurrences = [
            o for o in self._expand(item) if _overlaps(o.start, o.end, start, end)
        ]
        if not occurrences:
            return [] if since is None else [_removed(item.id)]
        return [self._item_json(item)] + [
            self._delta_occurrence(o) for o in occurrences
        ]

    def _removed_with_occurrences(
        self, item: _Item, start: datetime, end: datetime
    ) -> list[JSON]:
        removed = [_removed(item.id)]
        if item.is_series:
            removed.extend(
                _removed(o.id)
                for o in self._expand(item)
                if _overlaps(o.start, o.end, start, end)
            )
        return removed

    def _delta_occurrence(self, occurrence: Occurrence) -> JSON:
        if occurrence.exception is not None:
            return self._occurrence_json(occurrence)
        return {
            "@odata.type": "#microsoft.graph.event",
            "id": occurrence.id,
            "type": "occurrence",
            "seriesMasterId": occurrence.master.id,
            "start": graph_time(occurrence.start),
            "end": graph_time(occurrence.end),
        }

    # ----- internals: rendering ---------------------------------------

    def _item_json(self, item: _Item) -> JSON:
        kind = "seriesMaster" if item.is_series else "singleInstance"
        body = self._render(
            item.id,
            kind,
            None,
            item.start,
            item.end,
            item,
            item.values,
            item.modified,
            item.change,
        )
        if item.is_series:
            body["recurrence"] = _recurrence_json(item)
        return body

    def _occurrence_json(self, occurrence: Occurrence) -> JSON:
        master, exception = occurrence.master, occurrence.exception
        values = {**master.values, **(exception.values if exception else {})}
        return self._render(
            occurrence.id,
            "exception" if exception else "occurrence",
            master.id,
            occurrence.start,
            occurrence.end,
            master,
            values,
            exception.modified if exception else master.modified,
            master.change + (exception.change if exception else 0),
        )

    def _render(
        self,
        event_id: str,
        kind: str,
        master_id: str | None,
        start: datetime,
        end: datetime,
        item: _Item,
        values: JSON,
        modified: datetime,
        change: int,
    ) -> JSON:
        zone = "UTC" if item.all_day else windows_zone(item.zone)
        organizer = values["organizer"] or {"address": self.mailbox, "name": ""}
        return {
            "@odata.type": "#microsoft.graph.event",
            "@odata.etag": f'W/"{_change_key(event_id, change)}"',
            "id": event_id,
            "createdDateTime": graph_instant(item.created),
            "lastModifiedDateTime": graph_instant(modified),
            "changeKey": _change_key(event_id, change),
            "categories": list(values["categories"]),
            "originalStartTimeZone": zone,
            "originalEndTimeZone": zone,
            "iCalUId": item.ical_uid,
            "reminderMinutesBeforeStart": 15,
            "isReminderOn": True,
            "hasAttachments": False,
            "subject": values["subject"],
            "bodyPreview": str(values["body"])[:255],
            "importance": values["importance"],
            "sensitivity": values["sensitivity"],
            "isAllDay": item.all_day,
            "isCancelled": bool(values["is_cancelled"]),
            "isOrganizer": values["response"] == "organizer",
            "responseRequested": True,
            "seriesMasterId": master_id,
            "showAs": values["show_as"],
            "type": kind,
            "webLink": f"https://outlook.office365.com/owa/?itemid={event_id}",
            "responseStatus": {
                "response": values["response"],
                "time": "0001-01-01T00:00:00Z",
            },
            "body": {"contentType": "html", "content": str(values["body"])},
            "start": graph_time(start),
            "end": graph_time(end),
            "location": {"displayName": values["location"]},
            "locations": (
                [{"displayName": values["location"]}] if values["location"] else []
            ),
            "recurrence": None,
            "attendees": [_attendee_json(a) for a in values["attendees"]],
            "organizer": {"emailAddress": dict(organizer)},
        }


def _attendee_json(attendee: JSON) -> JSON:
    return {
        "type": attendee.get("type", "required"),
        "status": {
            "response": attendee.get("response", "none"),
            "time": "0001-01-01T00:00:00Z",
        },
        "emailAddress": {
            "name": attendee.get("name", ""),
            "address": attendee["address"],
        },
    }


def _recurrence_json(item: _Item) -> JSON:
    local_start = item.start.astimezone(ZoneInfo(item.zone)).date()
    return {
        "pattern": {
            "type": "weekly",
            "interval": item.interval_weeks,
            "month": 0,
            "dayOfMonth": 0,
            "daysOfWeek": [WEEKDAYS[d] for d in item.days],
            "firstDayOfWeek": "monday",
            "index": "first",
        },
        "range": {
            "type": "endDate",
            "startDate": local_start.isoformat(),
            "endDate": item.until.isoformat() if item.until else "0001-01-01",
            "recurrenceTimeZone": windows_zone(item.zone),
            "numberOfOccurrences": 0,
        },
    }


def _series_starts(master: _Item) -> list[datetime]:
    """Original UTC starts of every occurrence, expanded in the series' zone."""
    assert master.until is not None
    zone = UTC if master.all_day else ZoneInfo(master.zone)
    local = master.start.astimezone(zone)
    clock_time = local.time().replace(tzinfo=None)
    first = local.date()
    week_zero = first - timedelta(days=first.weekday())
    starts = []
    day = first
    while day <= master.until:
        weeks = (day - week_zero).days // 7
        if day.weekday() in master.days and weeks % master.interval_weeks == 0:
            starts.append(datetime.combine(day, clock_time, zone).astimezone(UTC))
        day += timedelta(days=1)
    return starts


def _bounds(
    start: datetime | date | str, end: datetime | date | str, zone: str, all_day: bool
) -> tuple[datetime, datetime]:
    return _instant(start, zone, all_day), _instant(end, zone, all_day)


def _instant(value: datetime | date | str, zone: str, all_day: bool) -> datetime:
    if isinstance(value, str):
        value = (
            datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
        )
    if not isinstance(value, datetime):
        return datetime.combine(value, time(0), UTC)
    if all_day:
        return datetime.combine(value.date(), time(0), UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(zone))
    return value.astimezone(UTC)


def _overlaps(start: datetime, end: datetime, lo: datetime, hi: datetime) -> bool:
    if start == end:
        return lo <= start < hi
    return start < hi and end > lo


def _removed(event_id: str) -> JSON:
    return {
        "@odata.type": "#microsoft.graph.event",
        "id": event_id,
        "@removed": {"reason": "deleted"},
    }


def _change_key(event_id: str, change: int) -> str:
    digest = hashlib.sha256(f"{event_id}#{change}".encode()).digest()[:16]
    return base64.b64encode(digest).decode("ascii")


def _ical_uid(event_id: str) -> str:
    return (
        "040000008200E00074C5B7101A82E008"
        + hashlib.sha256(event_id.encode()).hexdigest()[:48].upper()
    )


def _check_values(values: JSON) -> None:
    """Refuse what Graph could never hold, before it is stored (a bad value
    would break every later read of the calendar)."""
    unknown = set(values) - set(_VALUE_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown event fields: {sorted(unknown)}")
    for name, value in values.items():
        default = _VALUE_DEFAULTS[name]
        if name == "organizer":
            ok = value is None or _is_address(value)
            shape = "null or {address, name}"
        elif name == "attendees":
            ok = isinstance(value, list) and all(_is_address(a) for a in value)
            shape = "a list of {address, name, response, type}"
        elif isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            shape = "a list of strings"
        else:
            ok = isinstance(value, type(default))
            shape = type(default).__name__
        if not ok:
            raise TypeError(f"event field {name!r} must be {shape}, got {value!r}")


def _is_address(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("address"), str)
