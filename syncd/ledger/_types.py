"""The ledger's vocabulary: record states, the rows it hands out, its errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from syncd.errors import LedgerError


def utcnow() -> datetime:
    """The default clock: an aware UTC instant."""
    return datetime.now(UTC)


class State(StrEnum):
    """Where one calendar event stands on its way to a time entry."""

    PENDING = "pending"
    BOOKED = "booked"
    IN_DOUBT = "in_doubt"
    FAILED_TRANSIENT = "failed_transient"
    FAILED_PERMANENT = "failed_permanent"
    SKIPPED = "skipped"
    RETRACTED = "retracted"
    BILLED_LOCKED = "billed_locked"


CLAIMABLE = frozenset({State.SKIPPED, State.RETRACTED})
"""States a claim may always take over (FAILED_TRANSIENT once it is due)."""

SKIP_PROTECTED = frozenset(
    {State.BOOKED, State.PENDING, State.IN_DOUBT, State.BILLED_LOCKED}
)
"""States a skip never overwrites: an entry exists or may exist in InLoox."""

FAILURES = frozenset(
    {
        State.FAILED_TRANSIENT,
        State.FAILED_PERMANENT,
        State.IN_DOUBT,
        State.BILLED_LOCKED,
    }
)
"""States listed as recent failures by :meth:`Ledger.status`."""


@dataclass(frozen=True, slots=True)
class Record:
    """One (user, event id) row: the decision, its state and the InLoox entry."""

    user: str
    event_id: str
    state: State
    reason: str | None
    project_id: str | None
    task_id: str | None
    entry_id: str | None
    start: datetime | None
    end: datetime | None
    all_day: bool
    series_master_id: str | None
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    booked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a user's delta round stands: the link to replay and its window."""

    user: str
    delta_link: str | None
    window_start: datetime | None
    window_end: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UserState:
    """A user's standing: paused or not, and how its passes went."""

    user: str
    status: str
    paused_until: datetime | None
    reason: str | None
    last_pass_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    last_summary: dict[str, Any] | None


USER_STATUSES = frozenset({"active", "auth_required", "paused"})


class LedgerSchemaTooNew(LedgerError):
    """The database was migrated by a newer syncd than this one."""

    def __init__(self, revision: str) -> None:
        super().__init__(
            f"the ledger schema (revision {revision}) is newer than this syncd "
            "understands; upgrade syncd to a release that knows it"
        )
        self.revision = revision


class LedgerSchemaMissing(LedgerError):
    """The database has no ledger schema and we were told not to create one."""

    def __init__(self) -> None:
        super().__init__(
            "the ledger has no schema yet; run `syncd once` or `syncd run` "
            "once to create it"
        )


class StateConflict(LedgerError):
    """A conditional transition found the record in an unexpected state."""

    def __init__(
        self,
        *,
        user: str,
        event_id: str,
        current: State | None,
        expected: Iterable[State],
    ) -> None:
        self.current = current
        self.expected = frozenset(expected)
        wanted = ", ".join(sorted(self.expected)) or "any"
        found = current.value if current is not None else "no record"
        super().__init__(
            f"ledger record is {found}, expected {wanted}",
            user=user,
            event_id=event_id,
        )
