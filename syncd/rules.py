"""Pure decisions: one event and one user's configuration -> book or skip.

Nothing here does I/O.  The planner (``syncd.engine``) combines a decision
with what the ledger knows to choose an action.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd.model import BOOKED_CATEGORY, Decision, Event

# Skip reasons: stable names shared by the ledger, logs, metrics and docs.
BOOKED_ELSEWHERE = "booked_elsewhere"
CANCELLED = "cancelled"
ALL_DAY = "all_day"
DECLINED = "declined"
TENTATIVE = "tentative"
FREE = "free"
PRIVATE = "private"
NO_DURATION = "no_duration"
TOO_LONG = "too_long"
NOT_SELECTED = "not_selected"
UNMAPPED = "unmapped"
NOT_ENDED = "not_ended"
TOO_OLD = "too_old"

# Reasons that mean "this is not (or no longer) work": a booked event that
# turns into one of them is retracted under ``on_cancel: retract``.
NOT_WORK = frozenset({
    CANCELLED, ALL_DAY, DECLINED, TENTATIVE, FREE, PRIVATE, NO_DURATION,
    TOO_LONG, NOT_SELECTED, UNMAPPED,
})

_PRIVATE_SENSITIVITIES = frozenset({"private", "confidential"})


class _Skip(Protocol):
    all_day: bool
    declined: bool
    tentative: bool
    free: bool
    private: bool
    cancelled: bool


class _Match(Protocol):
    categories: tuple[str, ...] | None
    all_categories: tuple[str, ...] | None
    subject: object | None
    organizer: str | None
    attendee_domain: str | None
    location: object | None


class _Rule(Protocol):
    match: _Match
    project: str
    task: str | None
    name: str | None


class _Select(Protocol):
    categories: tuple[str, ...]


class UserPolicy(Protocol):
    """The parts of a user's configuration the rules read."""

    select: _Select
    rules: Sequence[_Rule]
    default_project: str | None
    skip: _Skip
    book_before_end: bool
    max_duration: timedelta
    backdating_limit: timedelta


def decide(event: Event, policy: UserPolicy, *, now: datetime,
           known: bool = False) -> Decision:
    """Decide whether ``event`` is work to book, and on which project.

    ``known`` says the ledger already booked this event: the ``InLoox``
    category on it is then our own tag, not someone else's booking.
    """
    categories = _categories(event)
    if BOOKED_CATEGORY.casefold() in categories and not known:
        return Decision.skip(BOOKED_ELSEWHERE)

    reason = _not_work(event, policy)
    if reason is not None:
        return Decision.skip(reason)

    target = _map(event, categories, policy)
    if target.book:
        timing = _timing(event, policy, now)
        if timing is not None:
            return Decision(book=False, project=target.project, task=target.task,
                            reason=timing, rule=target.rule)
    return target


def mapping(event: Event, policy: UserPolicy) -> Decision:
    """Only the project mapping of an event (rules, then default_project)."""
    return _map(event, _categories(event), policy)


def _categories(event: Event) -> frozenset[str]:
    return frozenset(c.casefold() for c in event.categories or ())


def _not_work(event: Event, policy: UserPolicy) -> str | None:
    """The first skip policy the event falls under, in a fixed order."""
    skip = policy.skip
    checks = (
        (skip.cancelled and bool(event.is_cancelled), CANCELLED),
        (skip.all_day and bool(event.is_all_day), ALL_DAY),
        (skip.declined and event.response == "declined", DECLINED),
        (skip.tentative and _is_tentative(event), TENTATIVE),
        (skip.free and event.show_as == "free", FREE),
        (skip.private and event.sensitivity in _PRIVATE_SENSITIVITIES, PRIVATE),
        (event.duration_seconds <= 0, NO_DURATION),
        (not event.is_all_day
         and event.duration_seconds > policy.max_duration.total_seconds(), TOO_LONG),
    )
    return next((reason for hit, reason in checks if hit), None)


def _is_tentative(event: Event) -> bool:
    return event.response == "tentativelyAccepted" or event.show_as == "tentative"


def _map(event: Event, categories: frozenset[str], policy: UserPolicy) -> Decision:
    """Project and task from the first matching rule, else the default."""
    for index, rule in enumerate(policy.rules):
        if matches(rule.match, event, categories):
            label = rule.name or f"rules[{index}]"
            return Decision(book=True, project=rule.project, task=rule.task,
                            reason=f"rule {label}", rule=label)

    triggers = {c.casefold() for c in policy.select.categories}
    if not triggers & categories:
        return Decision.skip(NOT_SELECTED)

    if policy.default_project is None:
        return Decision.skip(UNMAPPED)

    return Decision(book=True, project=policy.default_project,
                    reason="default_project", rule="default_project")


def matches(match: _Match, event: Event, categories: frozenset[str]) -> bool:
    """Whether every condition the rule gives holds for the event."""
    conditions = (
        _any_category(match.categories, categories),
        _all_categories(match.all_categories, categories),
        _search(match.subject, event.subject),
        _address(match.organizer, event.organizer),
        _attendee_domain(match.attendee_domain, event.attendees),
        _search(match.location, event.location),
    )
    given = [c for c in conditions if c is not None]
    return bool(given) and all(given)


def _any_category(wanted: tuple[str, ...] | None,
                  have: frozenset[str]) -> bool | None:
    if wanted is None:
        return None
    return any(w.casefold() in have for w in wanted)


def _all_categories(wanted: tuple[str, ...] | None,
                    have: frozenset[str]) -> bool | None:
    if wanted is None:
        return None
    return all(w.casefold() in have for w in wanted)


def _search(pattern: object | None, text: str | None) -> bool | None:
    if pattern is None:
        return None
    return text is not None and pattern.search(text) is not None  # type: ignore[attr-defined]


def _address(wanted: str | None, address: str | None) -> bool | None:
    if wanted is None:
        return None
    if address is None:
        return False
    wanted = wanted.casefold()
    if wanted.startswith("@"):
        return address.casefold().endswith(wanted)
    return address.casefold() == wanted


def _attendee_domain(domain: str | None,
                     attendees: tuple[str, ...] | None) -> bool | None:
    if domain is None:
        return None
    suffix = "@" + domain.casefold().lstrip("@")
    return any(a.casefold().endswith(suffix) for a in attendees or ())


def _timing(event: Event, policy: UserPolicy, now: datetime) -> str | None:
    """Skip reasons that depend on the clock: not ended yet, or too old."""
    if not isinstance(event.start, datetime) or not isinstance(event.end, datetime):
        return _day_timing(event.start, event.end, policy, now)
    if not policy.book_before_end and event.end > now:
        return NOT_ENDED
    if event.start < now - policy.backdating_limit:
        return TOO_OLD
    return None


def _day_timing(start: date, end: date, policy: UserPolicy,
                now: datetime) -> str | None:
    """All-day events are dates: compare them with today in the user's zone.

    ``end`` is exclusive, so an all-day event has ended once ``end`` has begun.
    """
    today = now.astimezone(_zone(getattr(policy, "timezone", None))).date()
    if not policy.book_before_end and end > today:
        return NOT_ENDED
    if start < today - timedelta(days=policy.backdating_limit.days):
        return TOO_OLD
    return None


def _zone(name: object) -> tzinfo:
    """The user's IANA zone; UTC when it is missing or unknown (never a crash)."""
    if not isinstance(name, str) or not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC
