"""The seams the sync core sees: a calendar source and a time-entry target.

Concrete clients (``syncd.graph``, ``syncd.inloox``) implement these; tests
and the benchmark swap them.  The core never imports a concrete client.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Final, Protocol

from syncd.model import DeltaPage, Event, TimeEntry, Window


class Unchanged(enum.Enum):
    """The type of :data:`UNCHANGED`."""

    UNCHANGED = "unchanged"


UNCHANGED: Final = Unchanged.UNCHANGED
"""A task left as it is by ``update_entry`` (``None`` removes the task)."""


class CalendarSource(Protocol):
    """Read access to one mailbox's calendar (Graph)."""

    def delta_round(
        self, mailbox: str, window: Window, delta_link: str | None
    ) -> AsyncIterator[DeltaPage]:
        """Yield every page of a round: continue ``delta_link`` or start anew.

        Raises ``DeltaExpired`` when Graph forgot the link, ``TransientError``,
        ``AuthError`` or ``PermanentError`` otherwise.  The last page carries
        the new delta link.
        """
        ...

    async def get_event(self, mailbox: str, event_id: str) -> Event | None:
        """The event as it is now, or ``None`` when it no longer exists."""
        ...

    async def aclose(self) -> None: ...


class TimeEntryTarget(Protocol):
    """Write access to one InLoox account's time entries."""

    async def create_from_event(
        self, *, mailbox: str, event_id: str, project_id: str,
        task_id: str | None, tag_event: bool,
    ) -> TimeEntry | None:
        """Book the event; the created entry, or ``None`` on an empty success.

        Raises ``OutcomeUnknown`` when the request went out and no answer
        came back: the caller must look the entry up before trying again.
        """
        ...

    async def find_entries(
        self, *, project_id: str | None, start: datetime, end: datetime
    ) -> list[TimeEntry]:
        """Entries of this account's performer on the project over exactly
        ``[start, end]`` (any project when ``project_id`` is ``None``)."""
        ...

    async def get_entry(self, entry_id: str) -> TimeEntry | None: ...

    async def learn_performer(self, entry_ids: Callable[[], list[str]]) -> bool:
        """Whether lookups are narrowed to this account's performer, learning
        it, when unknown, from the first of ``entry_ids()`` (entries booked
        with this account) that still exists."""
        ...

    async def update_entry(
        self, entry_id: str, *, project_id: str | None = None,
        task_id: str | Unchanged | None = UNCHANGED,
        start: datetime | None = None, end: datetime | None = None,
    ) -> None:
        """Change the given fields; ``task_id=None`` removes the task."""
        ...

    async def delete_entry(self, entry_id: str) -> None:
        """Delete the entry; ``BilledLocked`` when InLoox refuses (billed)."""
        ...

    async def resolve_project(self, name: str) -> str | None:
        """The id of the project with this name, or ``None``."""
        ...

    async def aclose(self) -> None: ...
