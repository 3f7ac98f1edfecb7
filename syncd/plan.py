"""Plan: turn a round, the rules and the ledger into small actions.

Pure: no I/O.  The result is what ``syncd plan`` prints and what tests
assert on; ``syncd.engine`` applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from syncd import rules
from syncd.config import format_duration
from syncd.model import Action, Decision, Event

# Ledger states, by name (the ledger package owns the enum; the planner only
# compares values so that it stays free of database imports).
PENDING, BOOKED, IN_DOUBT = "pending", "booked", "in_doubt"
FAILED_TRANSIENT, FAILED_PERMANENT = "failed_transient", "failed_permanent"
SKIPPED, RETRACTED, BILLED_LOCKED = "skipped", "retracted", "billed_locked"

REOPENABLE = frozenset({SKIPPED, RETRACTED})
TAGGED = frozenset({PENDING, BOOKED, IN_DOUBT, RETRACTED, BILLED_LOCKED})
KEEP_WHEN_GONE = frozenset({PENDING, IN_DOUBT, BILLED_LOCKED})
UNKNOWN_PROJECT = "unknown_project"
UNKNOWN_TASK = "unknown_task"  # tasks are given by id; a name cannot be resolved


class Known(Protocol):
    """What the planner reads of a ledger record."""

    event_id: str
    state: Any
    reason: str | None
    project_id: str | None
    task_id: str | None
    entry_id: str | None
    start: datetime | None
    end: datetime | None
    all_day: bool
    series_master_id: str | None
    next_attempt_at: datetime | None


class Policy(rules.UserPolicy, Protocol):
    on_change: str
    on_cancel: str
    freeze_after: timedelta


@dataclass(frozen=True, slots=True)
class Round:
    """A round's content, completed: bookable events and what vanished."""

    events: Mapping[str, Event]
    gone: frozenset[str] = frozenset()  # confirmed deleted (GET said 404)
    masters: Mapping[str, Event] = field(default_factory=dict)


def instants(event: Event) -> tuple[datetime, datetime, bool]:
    """UTC bounds as the ledger stores them; all-day dates become UTC midnight."""
    return _instant(event.start), _instant(event.end), event.is_all_day is True


def _instant(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def plan(
    round_: Round,
    known: Mapping[str, Known],
    policy: Policy,
    *,
    now: datetime,
    resolve: Callable[[str], str | None] = lambda p: p,
) -> list[Action]:
    """Every action one pass takes, in a stable order (by event start)."""
    series_projects = _series_projects(known.values())
    series_projects.update(_master_projects(round_.masters, policy, resolve))
    actions = [
        _plan_event(event, known.get(event_id), policy, now, resolve, series_projects)
        for event_id, event in round_.events.items()
    ]
    actions += [_plan_gone(known[i], policy, now) for i in sorted(round_.gone)
                if i in known]
    seen = set(round_.events) | set(round_.gone)
    actions += _plan_due(known, seen, now, policy)
    return sorted(actions, key=_order)


def _order(action: Action) -> tuple[str, str]:
    event = action.event
    start = _instant(event.start).isoformat() if event else ""
    return start, action.event_id


def _series_projects(records: Iterable[Known]) -> dict[str, tuple[str, str | None]]:
    """The project each series was first booked on: it sticks to the series."""
    firsts: dict[str, Known] = {}
    for record in records:
        if record.series_master_id is None or _state(record) != BOOKED:
            continue
        if record.project_id is None:
            continue
        first = firsts.get(record.series_master_id)
        if first is None or (record.start or _EPOCH) < (first.start or _EPOCH):
            firsts[record.series_master_id] = record
    return {k: (r.project_id or "", r.task_id) for k, r in firsts.items()}


def _master_projects(masters: Mapping[str, Event], policy: Policy,
                     resolve: Callable[[str], str | None]
                     ) -> dict[str, tuple[str, str | None]]:
    """The project each series master maps to: the whole series books on it.

    A master this round brought says what the series is now; when the series
    as a whole was recategorised, its mapping replaces the first booking's.
    """
    projects: dict[str, tuple[str, str | None]] = {}
    for master_id, master in masters.items():
        mapping = _resolved(rules.mapping(master, policy), resolve)
        if mapping.book and mapping.project is not None:
            projects[master_id] = (mapping.project, mapping.task)
    return projects


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _state(record: Known) -> str:
    return str(getattr(record.state, "value", record.state))


def _plan_event(event: Event, record: Known | None, policy: Policy, now: datetime,
                resolve: Callable[[str], str | None],
                series: Mapping[str, tuple[str, str | None]]) -> Action:
    decision = rules.decide(event, policy, now=now, known=_tagged_by_us(record))
    decision = _resolved(decision, resolve)
    decision = _sticky(decision, event, series)
    if record is None:
        return _plan_new(event, decision)
    return _plan_known(event, record, decision, policy, now)


def _tagged_by_us(record: Known | None) -> bool:
    """Whether an ``InLoox`` category on the event may be our own tag.

    Every state in which we created (or may have created) an entry counts: a
    retracted booking keeps the tag, and must not read as booked elsewhere.
    """
    if record is None:
        return False
    return _state(record) in TAGGED or record.entry_id is not None


def _resolved(decision: Decision, resolve: Callable[[str], str | None]) -> Decision:
    """Replace project and task names by ids; an unknown name cannot be booked."""
    if decision.project is None:
        return decision
    project = resolve(decision.project)
    task = resolve(decision.task) if decision.task else None
    if project is None:
        return Decision.skip(f"{UNKNOWN_PROJECT}:{decision.project}")
    if decision.task and task is None:
        return Decision.skip(f"{UNKNOWN_TASK}:{decision.task}")
    return replace(decision, project=project, task=task)


def _sticky(decision: Decision, event: Event,
            series: Mapping[str, tuple[str, str | None]]) -> Decision:
    """An occurrence books on the project its series was first booked on."""
    master_id = event.series_master_id
    if decision.project is None or master_id is None or master_id not in series:
        return decision
    project, task = series[master_id]
    if (project, task) == (decision.project, decision.task):
        return decision
    return replace(decision, project=project, task=task, rule="series",
                   reason=f"{decision.reason}; kept the series' project")


def _plan_new(event: Event, decision: Decision) -> Action:
    if decision.book:
        return Action("create", event.id, decision, event, why=decision.reason)
    return Action("skip", event.id, decision, event, why=decision.reason)


def _plan_known(event: Event, record: Known, decision: Decision, policy: Policy,
                now: datetime) -> Action:
    state = _state(record)
    if state == BOOKED:
        return _plan_booked(event, record, decision, policy, now)
    if state in (PENDING, IN_DOUBT):
        return Action("recover", event.id, decision, event, record.entry_id,
                      why=f"{state}: look the entry up before booking again")
    if state == BILLED_LOCKED:
        return Action("nothing", event.id, decision, event, record.entry_id,
                      why="billed in InLoox: never changed again")
    if state == FAILED_PERMANENT and decision.book:
        return Action("nothing", event.id, decision, event,
                      why="failed permanently: run `syncd retry` after fixing it")
    if state == FAILED_TRANSIENT and decision.book and not _due(record, now):
        return Action("nothing", event.id, decision, event, why="retry later")
    if decision.book:
        return Action("create", event.id, decision, event, why=decision.reason)
    if state == SKIPPED and _same_skip(event, record, decision):
        return Action("nothing", event.id, decision, event, why=decision.reason)
    return Action("skip", event.id, decision, event, why=decision.reason)


def _same_skip(event: Event, record: Known, decision: Decision) -> bool:
    """The ledger already holds this skip: same reason, mapping and times.

    A waiting event (``not_ended``) is booked from what the ledger stored, so
    a move or a recategorisation while it waits must be recorded again.
    """
    start, end, _ = instants(event)
    stored = (record.reason, record.project_id, record.task_id, record.start,
              record.end)
    return stored == (decision.reason, decision.project, decision.task, start, end)


def _due(record: Known, now: datetime) -> bool:
    return record.next_attempt_at is None or record.next_attempt_at <= now


def _frozen(record: Known, policy: Policy, now: datetime) -> bool:
    return record.end is not None and record.end < now - policy.freeze_after


def _plan_booked(event: Event, record: Known, decision: Decision, policy: Policy,
                 now: datetime) -> Action:
    if _frozen(record, policy, now):
        frozen = format_duration(policy.freeze_after)
        return Action("nothing", event.id, decision, event, record.entry_id,
                      why=f"older than freeze_after ({frozen})")
    if not decision.book and decision.reason in rules.NOT_WORK:
        return _retraction(event.id, record, decision, event, policy)
    if decision.reason == rules.TOO_OLD:
        # Moved back beyond what InLoox accepts: the entry cannot follow it.
        return _retraction(event.id, record, decision, event, policy)
    if decision.reason == rules.NOT_ENDED and policy.on_change == "update":
        return Action("retract", event.id, decision, event, record.entry_id,
                      why="moved to a time that has not ended; booked again after")
    changes = _changes(event, record, decision, policy)
    if changes:
        why = ("meeting moved after booking" if "start" in changes
               else "now maps to another project or task")
        return Action("update", event.id, decision, event, record.entry_id,
                      why=why, changes=changes)
    return Action("nothing", event.id, decision, event, record.entry_id,
                  why="booked, unchanged")


def after_recovery(action: Action, record: Known, policy: Policy, *,
                   now: datetime) -> Action | None:
    """What follows once an in-doubt claim turned out booked.

    The event may have moved, changed project, been declined or deleted
    while its outcome was unknown: the found entry follows it like any
    booked one.
    """
    if action.event is not None:
        return _plan_booked(action.event, record, action.decision, policy, now)
    if not action.decision.book:
        return _plan_gone(record, policy, now)
    return None


def _changes(event: Event, record: Known, decision: Decision,
             policy: Policy) -> dict[str, object]:
    start, end, _ = instants(event)
    changes: dict[str, object] = {}
    if policy.on_change == "update" and (start, end) != (record.start, record.end):
        changes.update(start=start, end=end)
    if decision.project and decision.project != record.project_id:
        changes["project_id"] = decision.project
    if decision.project and decision.task != record.task_id:
        changes["task_id"] = decision.task
    return changes


def _retraction(event_id: str, record: Known, decision: Decision,
                event: Event | None, policy: Policy) -> Action:
    if policy.on_cancel != "retract":
        return Action("nothing", event_id, decision, event, record.entry_id,
                      why=f"{decision.reason} after booking; on_cancel: keep")
    return Action("retract", event_id, decision, event, record.entry_id,
                  why=f"{decision.reason} after booking")


def _plan_gone(record: Known, policy: Policy, now: datetime) -> Action:
    decision = Decision.skip(rules.CANCELLED)
    if _state(record) in (PENDING, IN_DOUBT):
        return Action("recover", record.event_id, replace(decision, reason="deleted"),
                      entry_id=record.entry_id,
                      why="deleted while in doubt: look the entry up, retract it")
    if _state(record) in KEEP_WHEN_GONE:
        return Action("nothing", record.event_id, decision, entry_id=record.entry_id,
                      why=f"deleted, but {_state(record)}: the entry stays")
    if _state(record) != BOOKED:
        return Action("forget", record.event_id, decision, why="deleted, never booked")
    if _frozen(record, policy, now):
        return Action("nothing", record.event_id, decision, entry_id=record.entry_id,
                      why="deleted, but older than freeze_after")
    return _retraction(record.event_id, record, replace(decision, reason="deleted"),
                       None, policy)


def _plan_due(known: Mapping[str, Known], seen: set[str], now: datetime,
              policy: Policy) -> list[Action]:
    """Work the ledger holds that this round did not bring: retries, waits."""
    actions = []
    for event_id, record in known.items():
        if event_id in seen:
            continue
        action = _due_action(record, now, policy)
        if action is not None:
            actions.append(action)
    return actions


def _due_action(record: Known, now: datetime, policy: Policy) -> Action | None:
    state = _state(record)
    stored = Decision(book=True, project=record.project_id, task=record.task_id,
                      reason="stored decision")
    if state in (PENDING, IN_DOUBT):
        return Action("recover", record.event_id, stored, entry_id=record.entry_id,
                      why=f"{state}: look the entry up before booking again")
    if state == FAILED_TRANSIENT and _due(record, now) and record.project_id:
        return Action("create", record.event_id, stored, why="retry after failure")
    if _waited(record, now) and record.project_id:
        if record.start is not None and record.start < now - policy.backdating_limit:
            return Action("skip", record.event_id, Decision.skip(rules.TOO_OLD),
                          why=rules.TOO_OLD)
        return Action("create", record.event_id, stored, why="meeting has ended")
    return None


def _waited(record: Known, now: datetime) -> bool:
    return (_state(record) in REOPENABLE and record.reason == rules.NOT_ENDED
            and record.end is not None and record.end <= now)
