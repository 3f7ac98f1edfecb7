"""The domain: normalised calendar events, decisions, and time entries.

Graph speaks in wire JSON; InLoox in OData entities.  The sync core speaks
only in these types, so each external system stays behind its own seam.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Literal

BOOKED_CATEGORY = "InLoox"
"""The category InLoox adds to an event it booked (``tagEvent``)."""


class EventType(StrEnum):
    SINGLE = "singleInstance"
    OCCURRENCE = "occurrence"
    EXCEPTION = "exception"
    SERIES_MASTER = "seriesMaster"


@dataclass(frozen=True, slots=True)
class Event:
    """One calendar event as Graph described it, normalised.

    Timed events have aware UTC ``datetime`` bounds; all-day events have
    ``date`` bounds (``end`` exclusive) and are never converted between zones.
    Fields an occurrence did not carry are ``None`` until
    :meth:`inherit` completes them from the series master.
    """

    id: str
    type: EventType
    start: datetime | date
    end: datetime | date
    is_all_day: bool | None = False
    series_master_id: str | None = None
    subject: str | None = None
    categories: tuple[str, ...] | None = None
    sensitivity: str | None = None  # normal, personal, private, confidential
    show_as: str | None = None  # free, tentative, busy, oof, workingElsewhere
    response: str | None = None  # none, organizer, accepted, declined, ...
    is_cancelled: bool | None = None
    organizer: str | None = None  # e-mail address, lower case
    attendees: tuple[str, ...] | None = None  # e-mail addresses, lower case
    location: str | None = None
    start_zone: str | None = None  # the zone the organiser used, for display

    def inherit(self, master: Event) -> Event:
        """Fill the fields this occurrence lacks from its series master."""
        inherited = {
            f.name: getattr(master, f.name)
            for f in dataclasses.fields(self)
            if f.name in _INHERITED and getattr(self, f.name) is None
        }
        if not inherited:
            return self
        completed = dataclasses.replace(self, **inherited)
        if completed.is_all_day and isinstance(completed.start, datetime):
            # The occurrence arrived without isAllDay, so its bounds were read
            # as instants; an all-day event is a range of dates (UTC midnight
            # on the wire), never shifted between zones.
            end = completed.end
            return dataclasses.replace(
                completed, start=completed.start.date(),
                end=end.date() if isinstance(end, datetime) else end)
        return completed

    @property
    def duration_seconds(self) -> float:
        start, end = self.start, self.end
        if isinstance(start, datetime) and isinstance(end, datetime):
            return (end - start).total_seconds()
        if isinstance(start, datetime) or isinstance(end, datetime):
            return 0.0  # mixed bounds: malformed, never bookable
        return float((end - start).days * 86400)


_INHERITED = frozenset({
    "subject", "categories", "sensitivity", "show_as", "response",
    "is_cancelled", "organizer", "attendees", "location", "is_all_day",
})


@dataclass(frozen=True, slots=True)
class Removed:
    """Graph's ``@removed`` item: the event left the window or was deleted."""

    id: str
    reason: str = "deleted"


DeltaItem = Event | Removed


@dataclass(frozen=True, slots=True)
class DeltaPage:
    """One page of a calendarView delta round."""

    items: list[DeltaItem]
    next_link: str | None = None
    delta_link: str | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """The calendarView window ``[start, end)`` of a round, aware UTC."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rules say about one event: book it (where) or skip it (why)."""

    book: bool
    project: str | None = None
    task: str | None = None
    reason: str = ""  # skip reason, or the rule that matched
    rule: str | None = None

    @classmethod
    def skip(cls, reason: str) -> Decision:
        return cls(book=False, reason=reason)


ActionKind = Literal[
    "create", "recover", "update", "retract", "skip", "forget", "nothing"
]


@dataclass(frozen=True, slots=True)
class Action:
    """One small step a pass will take for one event."""

    kind: ActionKind
    event_id: str
    decision: Decision
    event: Event | None = None
    entry_id: str | None = None
    why: str = ""
    changes: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TimeEntry:
    """An InLoox time entry, as far as syncd cares."""

    id: str
    project_id: str | None
    start: datetime
    end: datetime
    task_id: str | None = None
    is_billed: bool = False
    performer_id: str | None = None
    display_name: str | None = None


@dataclass(slots=True)
class PassResult:
    """What one user's pass did; the service turns it into logs and metrics."""

    user: str
    ok: bool
    seen: int = 0
    booked: int = 0
    updated: int = 0
    retracted: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    duration: float = 0.0
    error_kind: str | None = None  # transient, permanent, auth, config, lease, ledger
    error: str | None = None
