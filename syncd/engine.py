"""One user's pass: read the round, plan against the ledger, apply, record.

The engine sees only the seams: a ``CalendarSource``, a ``TimeEntryTarget``
and the ledger.  Every create is claimed in the ledger and committed before
InLoox is called; its outcome is recorded after (see DESIGN.md, exactly once).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from syncd import plan as planner
from syncd.errors import (
    AuthError,
    BilledLocked,
    DeltaExpired,
    OutcomeUnknown,
    PermanentError,
    TransientError,
)
from syncd.model import Action, Event, EventType, Removed, TimeEntry, Window
from syncd.ports import CalendarSource, TimeEntryTarget

log = structlog.get_logger("syncd.engine")

RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=6)


def utcnow() -> datetime:
    return datetime.now(UTC)


def window_for(policy: Any, now: datetime) -> Window:
    """``[now - lookback, now + horizon]``, widened to whole days in the user's zone.

    Whole days keep the window stable within a day, so the delta round only
    restarts when the day changes.
    """
    zone = _zone(policy.timezone)
    first = (now - policy.lookback).astimezone(zone).date()
    last = (now + policy.horizon).astimezone(zone).date() + timedelta(days=1)
    start = datetime.combine(first, dtime(), zone).astimezone(UTC)
    end = datetime.combine(last, dtime(), zone).astimezone(UTC)
    return Window(start, end)


def _zone(name: str) -> ZoneInfo | timezone:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        return UTC


@dataclass
class RoundContent:
    """Everything one delta round said, deduplicated (the last word wins)."""

    events: dict[str, Event] = field(default_factory=dict)
    masters: dict[str, Event] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    delta_link: str | None = None
    pages: int = 0
    fresh: bool = False  # a new round: everything in the window, no @removed

    def add(self, item: Event | Removed) -> None:
        if isinstance(item, Removed):
            self.events.pop(item.id, None)
            self.masters.pop(item.id, None)
            self.removed.add(item.id)
            return
        self.removed.discard(item.id)
        if item.type == EventType.SERIES_MASTER:
            self.masters[item.id] = item
        else:
            self.events[item.id] = item


async def read_round(source: CalendarSource, mailbox: str, window: Window,
                     delta_link: str | None) -> RoundContent:
    """Follow every page of a round; a forgotten delta link starts a new one."""
    try:
        return await _collect(source, mailbox, window, delta_link)
    except DeltaExpired:
        if delta_link is None:
            raise
        log.info("delta_link_expired", mailbox=mailbox)
        return await _collect(source, mailbox, window, None)


async def _collect(source: CalendarSource, mailbox: str, window: Window,
                   delta_link: str | None) -> RoundContent:
    content = RoundContent(fresh=delta_link is None)
    async for page in source.delta_round(mailbox, window, delta_link):
        content.pages += 1
        for item in page.items:
            content.add(item)
        if page.delta_link:
            content.delta_link = page.delta_link
    return content


@dataclass
class PassContext:
    """Everything one pass needs, bound to one user."""

    user: Any  # UserConfig
    ledger: Any  # syncd.ledger.Ledger
    source: CalendarSource
    target: TimeEntryTarget
    now: datetime
    fence: int | None = None
    dry_run: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    keep_cursor: bool = False  # an update or retraction failed: replay the round
    create_concurrency: int = 1  # creates of this pass in flight at once
    fresh: bool = False  # read the whole window anew (rules may have changed)

    @property
    def mailbox(self) -> str:
        return str(self.user.mailbox)


class Engine:
    """Runs passes for users; one instance serves every user of a process."""

    def __init__(self, ledger: Any, *, clock: Callable[[], datetime] = utcnow,
                 rng: random.Random | None = None) -> None:
        self.ledger = ledger
        self.clock = clock
        self.rng = rng or random.Random()

    # ---- reading -----------------------------------------------------------

    async def prepare(self, ctx: PassContext, *, fresh: bool = False
                      ) -> tuple[planner.Round, RoundContent, Window, dict[str, Any]]:
        """Read the round and complete it: masters, confirmations, projects.

        A round that brought nothing needs only the work the ledger holds
        (retries, waits, claims in doubt), not every record of the user: it
        is read with the delta link, in one transaction.
        """
        window = window_for(ctx.user, ctx.now)
        link, due = (None, None) if fresh else self._current_link(ctx, window)
        content = await read_round(ctx.source, ctx.mailbox, window, link)
        if _is_quiet(content):
            if due is None:
                due = self.ledger.due_work(ctx.mailbox, ctx.now)
            return planner.Round(events={}), content, window, due
        known = self.ledger.records(ctx.user.mailbox)
        events, masters = await self._complete(ctx, content)
        gone = await self._confirm(ctx, content, events, known, window)
        round_ = planner.Round(events=events, gone=frozenset(gone), masters=masters)
        return round_, content, window, known

    def _current_link(self, ctx: PassContext, window: Window
                      ) -> tuple[str | None, dict[str, Any]]:
        """The delta link to continue, and the user's due work."""
        cursor, due = self.ledger.cursor_and_due_work(ctx.mailbox, ctx.now)
        if cursor is None or cursor.delta_link is None:
            return None, due
        if (cursor.window_start, cursor.window_end) != (window.start, window.end):
            log.info("window_moved", mailbox=ctx.mailbox,
                     start=window.start.isoformat(), end=window.end.isoformat())
            return None, due
        return str(cursor.delta_link), due

    async def _complete(self, ctx: PassContext, content: RoundContent
                        ) -> tuple[dict[str, Event], dict[str, Event]]:
        """Occurrences inherit what they lack from their series master.

        A master the round did not bring is fetched once.  Returns the
        completed events and every master known to this pass.
        """
        masters = dict(content.masters)
        events: dict[str, Event] = {}
        for event_id, event in content.events.items():
            master_id = event.series_master_id
            if master_id and master_id not in masters:
                fetched = await ctx.source.get_event(ctx.mailbox, master_id)
                if fetched is not None:
                    masters[master_id] = fetched
            master = masters.get(master_id) if master_id else None
            events[event_id] = _completed(event, master)
        return events, masters

    async def _confirm(self, ctx: PassContext, content: RoundContent,
                       events: dict[str, Event], known: Mapping[str, Any],
                       window: Window) -> set[str]:
        """Ask Graph before retracting: ``@removed`` may only mean "moved"."""
        suspects = {i for i in content.removed if _is_booked(known.get(i))}
        missing = _missing(content, events, known, window)
        suspects |= {i for i in missing if _is_booked(known[i])}
        gone = {i for i in missing - suspects
                if planner._state(known[i]) not in planner.KEEP_WHEN_GONE}
        for event_id in sorted(suspects):
            current = await ctx.source.get_event(ctx.mailbox, event_id)
            if current is None:
                gone.add(event_id)
                continue
            master_id = current.series_master_id
            master = content.masters.get(master_id) if master_id else None
            events[event_id] = _completed(current, master)
        unknown_removed = content.removed - suspects
        gone |= {i for i in unknown_removed if i in known}
        return gone

    # ---- planning and applying --------------------------------------------

    async def resolver(self, ctx: PassContext, round_: planner.Round
                       ) -> Callable[[str], str | None]:
        """Resolve rule project and task names to ids, once per pass."""
        from syncd.config import is_guid

        names = {r.project for r in ctx.user.rules if not is_guid(r.project)}
        if ctx.user.default_project and not is_guid(ctx.user.default_project):
            names.add(ctx.user.default_project)
        resolved = {name: await ctx.target.resolve_project(name) for name in names}
        return lambda value: value if is_guid(value) else resolved.get(value)

    async def run(self, ctx: PassContext) -> list[Action]:
        """One full pass for one user; returns the actions it applied.

        Every action but a create runs first, one after another in plan
        order; then the creates run side by side (each one's ledger steps
        stay in order: claim, call, outcome).  Lookups never overlap a
        create, so an entry being made cannot be taken for another event.
        """
        round_, content, window, known = await self.prepare(ctx, fresh=ctx.fresh)
        resolve = await self.resolver(ctx, round_)
        actions = planner.plan(round_, known, ctx.user, now=ctx.now, resolve=resolve)
        for action in actions:
            if action.kind != "create":
                await self.apply(ctx, action, known.get(action.event_id))
        creates = [a for a in actions if a.kind == "create"]
        await self._create_all(ctx, creates, known)
        if content.delta_link and not ctx.keep_cursor:
            self.ledger.save_cursor(ctx.mailbox, content.delta_link, window.start,
                                    window.end, fence=ctx.fence)
        return actions

    async def _create_all(self, ctx: PassContext, creates: list[Action],
                          known: Mapping[str, Any]) -> None:
        """Apply the creates, ``ctx.create_concurrency`` at once.

        An error (an AuthError above all) stops the others: a create
        cancelled while InLoox is asked keeps its claim PENDING, which the
        next pass looks up as in doubt.  Creates InLoox answered without an
        entry are looked up once every create has ended.
        """
        workers = min(max(1, ctx.create_concurrency), len(creates))
        if workers <= 1:
            for action in creates:
                await self._create(ctx, action, known.get(action.event_id))
            return

        unanswered: list[Any] = []
        queue = iter(creates)

        async def worker() -> None:
            for action in queue:
                record = known.get(action.event_id)
                await self._create(ctx, action, record, unanswered)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        except BaseExceptionGroup as failed:
            raise _first_error(failed) from None
        for record in unanswered:
            self._booked(ctx, record, await self._lookup(ctx, record))

    async def apply(self, ctx: PassContext, action: Action, record: Any) -> None:
        handler = {
            "create": self._create, "recover": self._recover,
            "update": self._update, "retract": self._retract,
            "skip": self._skip, "forget": self._forget,
        }.get(action.kind)
        if handler is None:
            ctx.outcomes["unchanged"] += 1
            return
        await handler(ctx, action, record)

    async def _skip(self, ctx: PassContext, action: Action, record: Any) -> None:
        reason = action.decision.reason
        start, end, all_day = _bounds(action, record)
        self.ledger.record_skip(
            ctx.mailbox, action.event_id, reason, start=start, end=end,
            all_day=all_day, series_master_id=_series(action, record),
            project_id=action.decision.project, task_id=action.decision.task,
            fence=ctx.fence)
        ctx.skipped[reason.split(":", 1)[0]] += 1

    async def _forget(self, ctx: PassContext, action: Action, record: Any) -> None:
        self.ledger.forget(ctx.mailbox, action.event_id, fence=ctx.fence)
        ctx.outcomes["forgotten"] += 1

    async def _create(self, ctx: PassContext, action: Action, record: Any,
                      unanswered: list[Any] | None = None) -> None:
        start, end, all_day = _bounds(action, record)
        claimed = self.ledger.claim(
            ctx.mailbox, action.event_id, project_id=action.decision.project,
            task_id=action.decision.task, start=start, end=end, all_day=all_day,
            series_master_id=_series(action, record), fence=ctx.fence)
        if claimed is None:
            log.info("claim_lost", event_id=action.event_id)
            ctx.outcomes["unchanged"] += 1
            return
        await self._book(ctx, claimed, unanswered)

    async def _book(self, ctx: PassContext, record: Any,
                    unanswered: list[Any] | None = None) -> None:
        """Call InLoox for a claimed record and record what came of it.

        An empty success is looked up now, or later when ``unanswered``
        collects it (while other creates of the pass are in flight).
        """
        try:
            entry = await ctx.target.create_from_event(
                mailbox=ctx.mailbox, event_id=record.event_id,
                project_id=record.project_id, task_id=record.task_id,
                tag_event=bool(ctx.user.tag_event))
        except OutcomeUnknown as exc:
            self._fail(ctx, record, "in_doubt", exc)
            return
        except (AuthError, TransientError, PermanentError) as exc:
            self._fail(ctx, record, _failure_state(exc), exc)
            if isinstance(exc, AuthError):
                raise
            return
        if entry is None and unanswered is not None:
            unanswered.append(record)
            return
        if entry is None:
            entry = await self._lookup(ctx, record)
        self._booked(ctx, record, entry)

    def _booked(self, ctx: PassContext, record: Any, entry: TimeEntry | None) -> None:
        self._move(ctx, record.event_id, planner.BOOKED,
                   entry_id=entry.id if entry else None, booked_at=ctx.now,
                   last_error=None, next_attempt_at=None)
        ctx.outcomes["booked"] += 1
        log.info("event_booked", event_id=record.event_id,
                 entry_id=entry.id if entry else None, project=record.project_id)

    def _fail(self, ctx: PassContext, record: Any, state: str,
              exc: Exception) -> None:
        retry_at = ctx.now + self._backoff(record.attempts, exc)
        self._transition(ctx, record.event_id, state, last_error=str(exc),
                         next_attempt_at=retry_at if state != "failed_permanent"
                         else None)
        ctx.outcomes["failed"] += 1
        log.warning("booking_failed", event_id=record.event_id, state=state,
                    error=str(exc), attempts=record.attempts)

    def _backoff(self, attempts: int, exc: Exception) -> timedelta:
        hint = getattr(exc, "retry_after", None)
        base = RETRY_BASE * (2 ** max(0, attempts - 1))
        delay = min(base, RETRY_CAP).total_seconds() * self.rng.uniform(0.5, 1.0)
        return timedelta(seconds=max(delay, hint or 0.0))

    async def _lookup(self, ctx: PassContext, record: Any, *,
                      in_doubt: bool = False) -> TimeEntry | None:
        """Find the entry InLoox made for this event, if it made one.

        Without the meeting's times nothing can be found; for a booking in
        doubt that must not read as "not booked" (it would be booked again).
        """
        if (record.start is None or record.end is None) and not in_doubt:
            return None
        if record.start is None or record.end is None:
            raise PermanentError(
                "the outcome of this booking is unknown and it cannot be looked "
                "up without the meeting's times: check InLoox by hand, then run "
                "`syncd retry`", user=ctx.mailbox, event_id=record.event_id)
        known = await ctx.target.learn_performer(
            lambda: self.ledger.recent_entry_ids(ctx.mailbox))
        candidates = await ctx.target.find_entries(
            project_id=record.project_id, start=record.start, end=record.end)
        taken = self.ledger.entries_taken([c.id for c in candidates],
                                          user=ctx.mailbox, event_id=record.event_id)
        free = [c for c in candidates if c.id not in taken]
        if not known and len({c.performer_id for c in free}) > 1:
            # Whose is whose cannot be told: never adopt a colleague's entry.
            log.warning("lookup_ambiguous", event_id=record.event_id,
                        candidates=len(free))
            if in_doubt:
                raise PermanentError(
                    "the outcome of this booking is unknown and entries of "
                    "several people match it: check InLoox by hand, then run "
                    "`syncd retry`", user=ctx.mailbox, event_id=record.event_id)
            return None
        return free[0] if free else None

    async def _recover(self, ctx: PassContext, action: Action, record: Any) -> None:
        """A claim whose outcome is unknown: look it up, book only if absent."""
        try:
            entry = await self._lookup(ctx, record, in_doubt=True)
        except TransientError as exc:
            log.warning("lookup_failed", event_id=action.event_id, error=str(exc))
            ctx.outcomes["failed"] += 1
            return
        except PermanentError as exc:
            self._fail(ctx, record, "failed_permanent", exc)
            return
        if entry is None:
            await self._rebook(ctx, action, record)
            return
        booked = self._transition(ctx, record.event_id, planner.BOOKED,
                                  entry_id=entry.id, booked_at=ctx.now,
                                  last_error=None)
        ctx.outcomes["recovered"] += 1
        log.info("event_recovered", event_id=record.event_id, entry_id=entry.id)
        follow = planner.after_recovery(action, booked, ctx.user, now=ctx.now)
        if follow is not None and follow.kind != "nothing":
            # (Nothing more to do is not counted again as "unchanged".)
            await self.apply(ctx, follow, booked)

    async def _rebook(self, ctx: PassContext, action: Action, record: Any) -> None:
        """Nothing was booked: book the event as it is now, or let it go."""
        in_doubt = (planner.PENDING, planner.IN_DOUBT)
        if not action.decision.book and action.event is None:
            self.ledger.forget(ctx.mailbox, record.event_id, fence=ctx.fence)
            ctx.outcomes["forgotten"] += 1
            return
        start, end, all_day = _bounds(action, record)
        place = {"project_id": action.decision.project or record.project_id,
                 "task_id": action.decision.task if action.decision.project
                 else record.task_id,
                 "start": start, "end": end, "all_day": all_day}
        if not action.decision.book:
            reason = action.decision.reason
            self._transition(ctx, record.event_id, planner.SKIPPED, expect=in_doubt,
                             reason=reason, **place)
            ctx.skipped[reason.split(":", 1)[0]] += 1
            return
        claimed = self._transition(ctx, record.event_id, planner.PENDING,
                                   expect=in_doubt, attempts=record.attempts + 1,
                                   **place)
        await self._book(ctx, claimed)

    async def _update(self, ctx: PassContext, action: Action, record: Any) -> None:
        entry_id = record.entry_id or await self._entry_id(ctx, record)
        changes = dict(action.changes)
        try:
            if entry_id is None:
                raise PermanentError("the booked entry was not found in InLoox")
            await ctx.target.update_entry(entry_id, **changes)  # type: ignore[arg-type]
        except BilledLocked:
            self._billed(ctx, record)
            return
        except (TransientError, PermanentError) as exc:
            self._change_failed(ctx, action, exc)
            return
        self._transition(ctx, record.event_id, planner.BOOKED, entry_id=entry_id,
                         **changes)
        ctx.outcomes["updated"] += 1
        log.info("entry_updated", event_id=record.event_id, entry_id=entry_id,
                 fields=sorted(changes))

    async def _retract(self, ctx: PassContext, action: Action, record: Any) -> None:
        entry_id = record.entry_id or await self._entry_id(ctx, record)
        try:
            if entry_id is not None:
                await ctx.target.delete_entry(entry_id)
        except BilledLocked:
            self._billed(ctx, record)
            return
        except (TransientError, PermanentError) as exc:
            self._change_failed(ctx, action, exc)
            return
        self._transition(ctx, record.event_id, planner.RETRACTED,
                         **_retracted_fields(action))
        ctx.outcomes["retracted"] += 1
        log.info("entry_retracted", event_id=record.event_id, entry_id=entry_id,
                 reason=action.decision.reason)

    async def _entry_id(self, ctx: PassContext, record: Any) -> str | None:
        entry = await self._lookup(ctx, record)
        return entry.id if entry else None

    def _billed(self, ctx: PassContext, record: Any) -> None:
        self._transition(ctx, record.event_id, planner.BILLED_LOCKED, reason="billed")
        ctx.outcomes["billed_locked"] += 1
        log.warning("entry_billed_locked", event_id=record.event_id,
                    entry_id=record.entry_id)

    def _change_failed(self, ctx: PassContext, action: Action,
                       exc: Exception) -> None:
        ctx.outcomes["failed"] += 1
        if isinstance(exc, TransientError):
            ctx.keep_cursor = True  # the next pass reads the same round again
        else:
            self._transition(ctx, action.event_id, planner.BOOKED,
                             last_error=str(exc))
        log.warning("change_failed", event_id=action.event_id, kind=action.kind,
                    error=str(exc))

    def _transition(self, ctx: PassContext, event_id: str, state: str,
                    **fields: Any) -> Any:
        from syncd.ledger import State

        return self.ledger.transition(ctx.mailbox, event_id, State(state),
                                      fence=ctx.fence, **fields)

    def _move(self, ctx: PassContext, event_id: str, state: str,
              **fields: Any) -> None:
        """A transition whose record is not needed (see ``Ledger.move``)."""
        from syncd.ledger import State

        self.ledger.move(ctx.mailbox, event_id, State(state), fence=ctx.fence,
                         **fields)


def _is_quiet(content: RoundContent) -> bool:
    """A delta round that brought nothing: no event, master or removal."""
    return not (content.fresh or content.events or content.masters
                or content.removed)


def _first_error(failed: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a failed group of creates raises: an AuthError first."""
    errors = [e for e in _leaves(failed) if not isinstance(e, asyncio.CancelledError)]
    auth = [e for e in errors if isinstance(e, AuthError)]
    return (auth or errors or [asyncio.CancelledError()])[0]


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def _is_booked(record: Any) -> bool:
    return record is not None and planner._state(record) == planner.BOOKED


def _missing(content: RoundContent, events: Mapping[str, Event],
             known: Mapping[str, Any], window: Window) -> set[str]:
    """Known events in the window that the round should have brought, but not.

    A new round lists every event of the window and no ``@removed``: what it
    left out was deleted while no link was kept.  Deleting one occurrence
    changes its series without any ``@removed``: an occurrence missing from
    a series the round brought is gone (or moved out of the window).
    """
    changed = set(content.masters)
    return {
        event_id for event_id, record in known.items()
        if event_id not in events and event_id not in content.removed
        and (content.fresh or record.series_master_id in changed)
        and record.start is not None and window.start <= record.start < window.end
    }


def _completed(event: Event, master: Event | None) -> Event:
    """The occurrence with its master's values; all-day bounds as dates."""
    if master is not None:
        event = event.inherit(master)
    if not event.is_all_day:
        return event
    start, end = event.start, event.end
    if isinstance(start, datetime) and isinstance(end, datetime):
        return replace(event, start=start.date(), end=end.date())
    return event


def _retracted_fields(action: Action) -> dict[str, Any]:
    """What a retraction records: why, and for a waiting event its new bounds."""
    fields: dict[str, Any] = {"reason": action.decision.reason}
    if action.decision.reason != "not_ended" or action.event is None:
        return fields
    start, end, all_day = planner.instants(action.event)
    return {**fields, "start": start, "end": end, "all_day": all_day,
            "project_id": action.decision.project, "task_id": action.decision.task}


def _bounds(action: Action, record: Any) -> tuple[datetime | None,
                                                  datetime | None, bool]:
    if action.event is not None:
        return planner.instants(action.event)
    if record is None:
        return None, None, False
    return record.start, record.end, bool(record.all_day)


def _series(action: Action, record: Any) -> str | None:
    if action.event is not None:
        return action.event.series_master_id
    return record.series_master_id if record is not None else None


def _failure_state(exc: Exception) -> str:
    if isinstance(exc, PermanentError):
        return "failed_permanent"
    return "failed_transient"

