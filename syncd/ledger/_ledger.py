"""The ledger repository: every decision and state transition, committed."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    bindparam,
    delete,
    false,
    or_,
    select,
    text,
    update,
)

from syncd.errors import LedgerError
from syncd.ledger import _leases, _status
from syncd.ledger._engine import READ_ONLY, create, database_file, wrapped
from syncd.ledger._lock import ProcessLock, claim_owner, drop_owner, lock_path
from syncd.ledger._migrate import prepare
from syncd.ledger._schema import CURSORS, EVENTS, PASSES, USERS
from syncd.ledger._sql import check_fence, event_key, instant, record, upsert
from syncd.ledger._types import (
    CLAIMABLE,
    SKIP_PROTECTED,
    USER_STATUSES,
    Cursor,
    Record,
    State,
    StateConflict,
    UserState,
    utcnow,
)

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
PASS_HISTORY = 50
TRANSITION_FIELDS = frozenset(
    {
        "reason",
        "project_id",
        "task_id",
        "entry_id",
        "start",
        "end",
        "all_day",
        "series_master_id",
        "last_error",
        "next_attempt_at",
        "attempts",
        "booked_at",
    }
)
WAITING_REASON = "not_ended"
"""The skip reason of an event that is booked once it has ended."""
INSTANT_FIELDS = frozenset({"start", "end", "next_attempt_at", "booked_at"})

# Statements run on every pass are built once: building and coercing a
# statement cost as much CPU as running it.  Keys are bound as k_user and
# k_event_id; the values to insert or set come as parameters by column name.
_K_USER: BindParameter[str] = bindparam("k_user")
_K_EVENT: BindParameter[str] = bindparam("k_event_id")
_EVENT_KEY = (EVENTS.c.user == _K_USER) & (EVENTS.c.event_id == _K_EVENT)
_SELECT_RECORDS = select(EVENTS).where(EVENTS.c.user == _K_USER)
_K_NOW: BindParameter[datetime] = bindparam("k_now", type_=EVENTS.c.end.type)


def _state_in(states: Iterable[State]) -> Any:
    """``state = a OR state = b``: unlike ``IN`` it is not expanded anew into
    the SQL text on every execution of a statement built once."""
    return or_(false(), *(EVENTS.c.state == state.value for state in states))


_SELECT_DUE_WORK = select(EVENTS).where(
    EVENTS.c.user == _K_USER,
    or_(
        _state_in([State.PENDING, State.IN_DOUBT]),
        (EVENTS.c.state == State.FAILED_TRANSIENT.value)
        & or_(EVENTS.c.next_attempt_at.is_(None), EVENTS.c.next_attempt_at <= _K_NOW),
        _state_in([State.SKIPPED, State.RETRACTED])
        & (EVENTS.c.reason == WAITING_REASON)
        & (EVENTS.c.end <= _K_NOW),
    ),
)
_SELECT_CURSOR = select(CURSORS).where(CURSORS.c.user == _K_USER)
_SELECT_USER = select(USERS).where(USERS.c.user == _K_USER)
_TRANSITION = update(EVENTS).where(_EVENT_KEY)
_PENDING_TO_IN_DOUBT = update(EVENTS).where(
    EVENTS.c.user == _K_USER, EVENTS.c.state == State.PENDING.value
)
_INSERT_PASS = PASSES.insert()
_OLDEST_KEPT_PASS = (
    select(PASSES.c.id)
    .where(PASSES.c.user == _K_USER)
    .order_by(PASSES.c.id.desc())
    .offset(PASS_HISTORY - 1)
    .limit(1)
    .scalar_subquery()
)
_PRUNE_PASSES = delete(PASSES).where(
    PASSES.c.user == _K_USER, PASSES.c.id < _OLDEST_KEPT_PASS
)
_CURSOR_FIELDS = ("delta_link", "window_start", "window_end", "updated_at")
_UPSERTS: dict[tuple[str, str], Any] = {}
_TRANSITIONS: dict[tuple[frozenset[State] | None, bool], Any] = {}


def _cached(connection: Connection, name: str, build: Callable[[], Any]) -> Any:
    """A statement built once per dialect (upserts differ between dialects)."""
    key = (connection.dialect.name, name)
    statement = _UPSERTS.get(key)
    if statement is None:
        statement = _UPSERTS[key] = build()
    return statement


def _claim_insert(connection: Connection) -> Any:
    """``INSERT .. ON CONFLICT DO NOTHING``; its rowcount says whether it
    inserted (kept for an INSERT only when asked, on PostgreSQL)."""
    return _cached(
        connection,
        "claim",
        lambda: (
            upsert(connection, EVENTS)
            .on_conflict_do_nothing(index_elements=[EVENTS.c.user, EVENTS.c.event_id])
            .execution_options(preserve_rowcount=True)
        ),
    )


def _cursor_upsert(connection: Connection) -> Any:
    def build() -> Any:
        insert = upsert(connection, CURSORS)
        changes = {name: insert.excluded[name] for name in _CURSOR_FIELDS}
        return insert.on_conflict_do_update(
            index_elements=[CURSORS.c.user], set_=changes
        )

    return _cached(connection, "cursor", build)


def _pass_outcome_upsert(connection: Connection, ok: bool) -> Any:
    """Insert the user's row or update its last pass (and failure count)."""

    def build() -> Any:
        insert = upsert(connection, USERS)
        changes = {
            name: insert.excluded[name]
            for name in ("last_pass_at", "last_error", "last_summary")
        }
        if ok:
            changes["last_success_at"] = insert.excluded.last_success_at
            changes["consecutive_failures"] = insert.excluded.consecutive_failures
        else:
            changes["consecutive_failures"] = USERS.c.consecutive_failures + 1
        return insert.on_conflict_do_update(index_elements=[USERS.c.user], set_=changes)

    return _cached(connection, f"pass_outcome_{ok}", build)


class Ledger:
    """The ledger on SQLite or PostgreSQL; every write commits before returning."""

    def __init__(self, engine: Engine, *, clock: Clock = utcnow) -> None:
        self._engine = engine
        self._clock = clock
        self._lock: ProcessLock | None = None

    @classmethod
    def open(cls, url: str, *, clock: Clock = utcnow, migrate: bool = True) -> Ledger:
        """Connect, refuse a newer schema, and (unless told not to) migrate."""
        engine = create(url)
        try:
            prepare(engine, migrate=migrate)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, clock=clock)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def close(self) -> None:
        self.release_process_lock()
        self._engine.dispose()

    def ping(self) -> None:
        """Raise LedgerError unless the database answers."""
        with wrapped("ping"), self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # -- process lock (SQLite) ---------------------------------------------

    def acquire_process_lock(self) -> None:
        """SQLite: refuse to run beside another syncd on this database file.

        The lock file sits beside the file SQLite really opened, so every
        spelling of the URL shares it; a row in ``owners`` naming this
        process keeps a second one out even if the lock file is bypassed.
        """
        lock = self._process_lock()
        if lock is None or lock.held:
            return
        lock.acquire()
        try:
            with self._write("claim process lock") as connection:
                claim_owner(connection, lock.path, self._clock())
        except BaseException:
            lock.release()
            raise

    def release_process_lock(self) -> None:
        lock = self._lock
        if lock is None or not lock.held:
            return
        try:
            with self._write("release process lock") as connection:
                drop_owner(connection)
        except LedgerError as exc:
            log.warning("ledger_process_owner_not_dropped", error=str(exc))
        finally:
            lock.release()

    def _process_lock(self) -> ProcessLock | None:
        """The lock of this SQLite file; None in memory or on PostgreSQL."""
        if self._lock is None:
            file = database_file(self._engine)
            self._lock = None if file is None else ProcessLock(lock_path(file))
        return self._lock

    @contextmanager
    def process_lock(self) -> Iterator[None]:
        self.acquire_process_lock()
        try:
            yield
        finally:
            self.release_process_lock()

    # -- transactions --------------------------------------------------------

    @contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        with wrapped(action), self._engine.connect() as connection:
            connection.execution_options(**{READ_ONLY: True})
            with connection.begin():
                yield connection

    @contextmanager
    def _write(
        self, action: str, user: str | None = None, fence: int | None = None
    ) -> Iterator[Connection]:
        with wrapped(action), self._engine.begin() as connection:
            if user is not None:
                check_fence(connection, user, fence, self._clock())
            yield connection

    # -- event records -------------------------------------------------------

    def records(self, user: str) -> dict[str, Record]:
        """All of one user's records by event id."""
        with self._read("read records") as connection:
            rows = connection.execute(_SELECT_RECORDS, {"k_user": user})
            return {row.event_id: record(row) for row in rows}

    def due_work(self, user: str, now: datetime) -> dict[str, Record]:
        """The records a pass must act on although its round brought nothing.

        Claims left PENDING or IN_DOUBT, FAILED_TRANSIENT ones whose retry is
        due, and waiting skips or retractions (``not_ended``) that ended by
        ``now``; by event id.  A quiet pass reads these instead of every record.
        """
        with self._read("read due work") as connection:
            return _due_work(connection, user, now)

    def cursor_and_due_work(
        self, user: str, now: datetime
    ) -> tuple[Cursor | None, dict[str, Record]]:
        """:meth:`cursor` and :meth:`due_work` in one transaction.

        A pass continuing a round needs the due work whenever the round
        brings nothing, as nearly every round does: one read instead of two.
        """
        with self._read("read cursor and due work") as connection:
            return _cursor(connection, user), _due_work(connection, user, now)

    def get(self, user: str, event_id: str) -> Record | None:
        with self._read("read record") as connection:
            row = connection.execute(
                select(EVENTS).where(event_key(user, event_id))
            ).first()
        return None if row is None else record(row)

    def recent_entry_ids(self, user: str, limit: int = 3) -> list[str]:
        """The InLoox entries most recently booked for ``user``, newest first."""
        with self._read("read entries") as connection:
            rows = connection.execute(
                select(EVENTS.c.entry_id)
                .where(EVENTS.c.user == user, EVENTS.c.entry_id.is_not(None))
                .order_by(EVENTS.c.booked_at.desc().nulls_last())
                .limit(limit)
            ).all()
        return [row.entry_id for row in rows]

    def entries_taken(self, entry_ids: Collection[str], *, user: str,
                      event_id: str) -> set[str]:
        """Which of these InLoox entries any other record (of any user) holds."""
        if not entry_ids:
            return set()
        with self._read("read entries") as connection:
            rows = connection.execute(
                select(EVENTS.c.entry_id).where(
                    EVENTS.c.entry_id.in_(list(entry_ids)),
                    ~((EVENTS.c.user == user) & (EVENTS.c.event_id == event_id)),
                )
            ).all()
        return {row.entry_id for row in rows}

    def claim(
        self,
        user: str,
        event_id: str,
        *,
        project_id: str | None,
        task_id: str | None,
        start: datetime | date | None,
        end: datetime | date | None,
        all_day: bool,
        series_master_id: str | None,
        fence: int | None = None,
    ) -> Record | None:
        """Atomically make the event PENDING for us, or None if we may not.

        A new event is inserted; an existing one is taken only from SKIPPED,
        RETRACTED or a due FAILED_TRANSIENT.  Of two racing claimers exactly
        one gets the record.  ``entry_id`` and ``booked_at`` are kept.
        """
        now = self._clock()
        values: dict[str, Any] = {
            "project_id": project_id,
            "task_id": task_id,
            "start": instant(start),
            "end": instant(end),
            "all_day": all_day,
            "series_master_id": series_master_id,
            "reason": None,
            "next_attempt_at": None,
            "state": State.PENDING.value,
            "updated_at": now,
        }
        with self._write("claim", user, fence) as connection:
            row = self._insert_claim(connection, user, event_id, values, now)
            if row is None:
                row = self._reclaim(connection, user, event_id, values, now)
        if row is None:
            log.debug("ledger_claim_refused", user=user, event_id=event_id)
        return row

    def _insert_claim(
        self,
        connection: Connection,
        user: str,
        event_id: str,
        values: dict[str, Any],
        now: datetime,
    ) -> Record | None:
        params = {
            "user": user,
            "event_id": event_id,
            "attempts": 1,
            "created_at": now,
            **values,
        }
        if connection.execute(_claim_insert(connection), params).rowcount != 1:
            return None  # the event has a record: maybe one to reclaim

        # The new row holds exactly these values: built here, not read back.
        unset = {"entry_id": None, "last_error": None, "booked_at": None}
        return Record(**{**params, **unset, "state": State.PENDING})

    def _reclaim(
        self,
        connection: Connection,
        user: str,
        event_id: str,
        values: dict[str, Any],
        now: datetime,
    ) -> Record | None:
        due_failure = (EVENTS.c.state == State.FAILED_TRANSIENT) & or_(
            EVENTS.c.next_attempt_at.is_(None), EVENTS.c.next_attempt_at <= now
        )
        statement = (
            update(EVENTS)
            .where(event_key(user, event_id))
            .where(or_(EVENTS.c.state.in_(CLAIMABLE), due_failure))
            .values(attempts=EVENTS.c.attempts + 1, **values)
            .returning(*EVENTS.c)
        )
        row = connection.execute(statement).first()
        return None if row is None else record(row)

    def transition(
        self,
        user: str,
        event_id: str,
        state: State,
        *,
        expect: Iterable[State] | None = None,
        fence: int | None = None,
        **fields: Any,
    ) -> Record:
        """Move a record to ``state``, only from a state in ``expect`` if given.

        Raises StateConflict when the record is missing or in another state.
        Moving to BOOKED without ``booked_at`` stamps it with the clock.
        """
        row = self._update_state(user, event_id, state, expect, fence, fields,
                                 returning=True)
        return record(row)

    def move(
        self,
        user: str,
        event_id: str,
        state: State,
        *,
        expect: Iterable[State] | None = None,
        fence: int | None = None,
        **fields: Any,
    ) -> None:
        """:meth:`transition` for callers that need no record back.

        The same UPDATE without ``RETURNING``: recording the outcome of every
        booking need not read the row back and build a record nobody uses.
        """
        self._update_state(user, event_id, state, expect, fence, fields,
                           returning=False)

    def _update_state(
        self,
        user: str,
        event_id: str,
        state: State,
        expect: Iterable[State] | None,
        fence: int | None,
        fields: dict[str, Any],
        *,
        returning: bool,
    ) -> Any:
        """The UPDATE of a transition; its row when ``returning``."""
        now = self._clock()
        values = _transition_values(state, fields, now)
        params = {"k_user": user, "k_event_id": event_id, **values}
        expected = None if expect is None else frozenset(State(s) for s in expect)
        statement = _transition_statement(expected, returning)
        with self._write("transition", user, fence) as connection:
            result = connection.execute(statement, params)
            row = result.first() if returning else None
            if row is None and (returning or result.rowcount == 0):
                current = connection.execute(
                    select(EVENTS.c.state).where(event_key(user, event_id))
                ).scalar()
                raise StateConflict(
                    user=user,
                    event_id=event_id,
                    current=None if current is None else State(current),
                    expected=expected or (),
                )
        return row

    def record_skip(
        self,
        user: str,
        event_id: str,
        reason: str,
        *,
        start: datetime | date | None,
        end: datetime | date | None,
        all_day: bool,
        series_master_id: str | None,
        project_id: str | None = None,
        task_id: str | None = None,
        fence: int | None = None,
    ) -> Record:
        """Record a skip, unless an entry exists or may exist: then return that.

        ``project_id``/``task_id`` keep the mapping of an event that waits
        (``not_ended``), so it is booked once it ends without another read.
        """
        now = self._clock()
        values: dict[str, Any] = {
            "state": State.SKIPPED.value,
            "reason": reason,
            "project_id": project_id,
            "task_id": task_id,
            "start": instant(start),
            "end": instant(end),
            "all_day": all_day,
            "series_master_id": series_master_id,
            "next_attempt_at": None,
            "updated_at": now,
        }
        with self._write("record skip", user, fence) as connection:
            statement = (
                upsert(connection, EVENTS)
                .values(
                    user=user, event_id=event_id, attempts=0, created_at=now, **values
                )
                .on_conflict_do_update(
                    index_elements=[EVENTS.c.user, EVENTS.c.event_id],
                    set_=values,
                    where=EVENTS.c.state.not_in(SKIP_PROTECTED),
                )
                .returning(*EVENTS.c)
            )
            row = connection.execute(statement).first()
            if row is None:
                row = connection.execute(
                    select(EVENTS).where(event_key(user, event_id))
                ).one()
        return record(row)

    def forget(self, user: str, event_id: str, *, fence: int | None = None) -> bool:
        """Delete a record (a removed event never booked); True if it existed."""
        with self._write("forget", user, fence) as connection:
            result = connection.execute(delete(EVENTS).where(event_key(user, event_id)))
        return result.rowcount > 0

    def due_retries(self, user: str, now: datetime) -> list[Record]:
        """IN_DOUBT records, and FAILED_TRANSIENT ones whose time has come."""
        due = or_(
            EVENTS.c.state == State.IN_DOUBT,
            (EVENTS.c.state == State.FAILED_TRANSIENT)
            & or_(EVENTS.c.next_attempt_at.is_(None), EVENTS.c.next_attempt_at <= now),
        )
        with self._read("read due retries") as connection:
            rows = connection.execute(
                select(EVENTS)
                .where(EVENTS.c.user == user, due)
                .order_by(EVENTS.c.next_attempt_at, EVENTS.c.event_id)
            )
            return [record(row) for row in rows]

    def mark_pending_in_doubt(self, user: str, *, fence: int | None = None) -> int:
        """PENDING left by an interrupted pass -> IN_DOUBT; returns the count.

        Call it after taking the user's lease and before planning: nobody
        else can hold a claim of this user then, so every PENDING record is
        a create whose outcome was never recorded.
        """
        with self._write("recover pending", user, fence) as connection:
            result = connection.execute(
                _PENDING_TO_IN_DOUBT,
                {
                    "k_user": user,
                    "state": State.IN_DOUBT.value,
                    "updated_at": self._clock(),
                    "last_error": "claim left pending by an interrupted pass",
                },
            )
        return int(result.rowcount)

    def reset_failed(self, user: str | None = None, event_id: str | None = None) -> int:
        """`syncd retry`: failed records become due FAILED_TRANSIENT, attempts 0."""
        now = self._clock()
        statement = update(EVENTS).where(
            EVENTS.c.state.in_([State.FAILED_PERMANENT, State.FAILED_TRANSIENT])
        )
        if user is not None:
            statement = statement.where(EVENTS.c.user == user)
        if event_id is not None:
            statement = statement.where(EVENTS.c.event_id == event_id)
        with self._write("reset failed") as connection:
            result = connection.execute(
                statement.values(
                    state=State.FAILED_TRANSIENT.value,
                    next_attempt_at=now,
                    attempts=0,
                    updated_at=now,
                )
            )
        return int(result.rowcount)

    # -- delta links ---------------------------------------------------------

    def cursor(self, user: str) -> Cursor | None:
        with self._read("read cursor") as connection:
            return _cursor(connection, user)

    def save_cursor(
        self,
        user: str,
        delta_link: str | None,
        window_start: datetime | None,
        window_end: datetime | None,
        *,
        fence: int | None = None,
    ) -> None:
        params = {
            "user": user,
            "delta_link": delta_link,
            "window_start": window_start,
            "window_end": window_end,
            "updated_at": self._clock(),
        }
        with self._write("save cursor", user, fence) as connection:
            connection.execute(_cursor_upsert(connection), params)

    def drop_cursor(self, user: str, *, fence: int | None = None) -> None:
        with self._write("drop cursor", user, fence) as connection:
            connection.execute(delete(CURSORS).where(CURSORS.c.user == user))

    # -- per-user state ------------------------------------------------------

    def user_state(self, user: str) -> UserState | None:
        with self._read("read user state") as connection:
            row = connection.execute(_SELECT_USER, {"k_user": user}).first()
        return None if row is None else UserState(**row._mapping)

    def set_user_status(
        self,
        user: str,
        status: str,
        *,
        reason: str | None = None,
        paused_until: datetime | None = None,
        fence: int | None = None,
    ) -> None:
        """Set ``active``, ``auth_required`` or ``paused`` (until a time)."""
        if status not in USER_STATUSES:
            raise ValueError(f"unknown user status {status!r}")
        values = {"status": status, "reason": reason, "paused_until": paused_until}
        with self._write("set user status", user, fence) as connection:
            connection.execute(
                upsert(connection, USERS)
                .values(user=user, consecutive_failures=0, **values)
                .on_conflict_do_update(index_elements=[USERS.c.user], set_=values)
            )

    def record_pass(
        self,
        user: str,
        *,
        ok: bool,
        summary: dict[str, Any],
        error: str | None,
        fence: int | None = None,
    ) -> None:
        """Remember how a pass ended; keep the latest 50 passes per user."""
        now = self._clock()
        with self._write("record pass", user, fence) as connection:
            _upsert_pass_outcome(
                connection, user, ok=ok, summary=summary, error=error, now=now
            )
            connection.execute(
                _INSERT_PASS,
                {"user": user, "at": now, "ok": ok, "error": error, "summary": summary},
            )
            connection.execute(_PRUNE_PASSES, {"k_user": user})

    def status(self, users: list[str] | None = None) -> list[dict[str, Any]]:
        """Per user: standing, counts by state and skip reason, recent failures."""
        with self._read("status") as connection:
            if users is None:
                users = _status.known_users(connection)
            return _status.report(connection, users)

    # -- leases (scale-out on PostgreSQL) -------------------------------------

    def acquire_leases(
        self,
        owner: str,
        users: Sequence[str],
        ttl: timedelta,
        limit: int | None = None,
        busy: Collection[str] = (),
    ) -> dict[str, int]:
        """The users ``owner`` now serves, with their fences.

        Live leases are renewed; leases beyond ``limit`` are given back (fair
        spreading when owners join), those in ``busy`` last; free or expired
        ones are taken with ``SKIP LOCKED`` up to ``limit``.  SQLite grants
        every user (fence 0): the process lock makes it the only writer.
        """
        if self.dialect != "postgresql":
            return dict.fromkeys(users, 0)
        if not users:
            return {}

        with self._write("create leases") as connection:
            _leases.ensure_rows(connection, users)
        now = self._clock()
        with self._write("acquire leases") as connection:
            held = _leases.keep_held(
                connection, owner, users, now=now, ttl=ttl, limit=limit, busy=busy
            )
            room = None if limit is None else limit - len(held)
            taken = _leases.grab_free(
                connection, owner, users, now=now, ttl=ttl, limit=room
            )
        if taken:
            log.info("ledger_leases_taken", owner=owner, users=sorted(taken))
        return {**held, **taken}

    def renew_lease(self, owner: str, user: str, fence: int, ttl: timedelta) -> bool:
        """Extend a live lease; False if it expired or was taken over."""
        if self.dialect != "postgresql":
            return True
        with self._write("renew lease") as connection:
            return _leases.renew(
                connection, owner, user, fence, now=self._clock(), ttl=ttl
            )

    def release_leases(self, owner: str, users: Sequence[str] | None = None) -> None:
        """Give leases back (all of ``owner``'s when ``users`` is None)."""
        if self.dialect != "postgresql":
            return
        with self._write("release leases") as connection:
            _leases.release(connection, owner, users)

    def heartbeat(self, owner: str) -> None:
        """Tell the other replicas this owner is alive."""
        with self._write("heartbeat") as connection:
            _leases.heartbeat(connection, owner, self._clock())

    def retire_owner(self, owner: str) -> None:
        """A clean stop: give every lease back and drop the heartbeat."""
        if self.dialect != "postgresql":
            return
        with self._write("retire owner") as connection:
            _leases.release(connection, owner)
            _leases.forget_owner(connection, owner)

    def live_owners(self, ttl: timedelta) -> int:
        """Owners whose heartbeat is younger than ``ttl`` (at least 1)."""
        with self._read("count owners") as connection:
            count = _leases.live_owners(connection, self._clock() - ttl)
        return max(count, 1)


def _transition_statement(expected: frozenset[State] | None, returning: bool) -> Any:
    """The UPDATE of a transition, built once per set of expected states, with
    or without ``RETURNING`` the row."""
    key = (expected, returning)
    statement = _TRANSITIONS.get(key)
    if statement is None:
        statement = _TRANSITION
        if expected is not None:
            statement = statement.where(_state_in(sorted(expected)))
        if returning:
            statement = statement.returning(*EVENTS.c)
        _TRANSITIONS[key] = statement
    return statement


def _cursor(connection: Connection, user: str) -> Cursor | None:
    row = connection.execute(_SELECT_CURSOR, {"k_user": user}).first()
    return None if row is None else Cursor(**row._mapping)


def _due_work(connection: Connection, user: str, now: datetime) -> dict[str, Record]:
    rows = connection.execute(_SELECT_DUE_WORK, {"k_user": user, "k_now": now})
    return {row.event_id: record(row) for row in rows}


def _transition_values(
    state: State, fields: dict[str, Any], now: datetime
) -> dict[str, Any]:
    unknown = set(fields) - TRANSITION_FIELDS
    if unknown:
        raise TypeError(f"transition() got unknown fields: {sorted(unknown)}")
    values = {
        name: instant(value) if name in INSTANT_FIELDS else value
        for name, value in fields.items()
    }
    if state is State.BOOKED and "booked_at" not in values:
        values["booked_at"] = now
    return {**values, "state": State(state).value, "updated_at": now}


def _upsert_pass_outcome(
    connection: Connection,
    user: str,
    *,
    ok: bool,
    summary: dict[str, Any],
    error: str | None,
    now: datetime,
) -> None:
    params = {
        "user": user,
        "status": "active",
        "last_pass_at": now,
        "last_error": error,
        "last_summary": summary,
        "last_success_at": now if ok else None,
        "consecutive_failures": 0 if ok else 1,
    }
    connection.execute(_pass_outcome_upsert(connection, ok), params)
