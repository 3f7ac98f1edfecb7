"""Small builders for events and user policies used by the core tests."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from syncd.config import UserConfig
from syncd.model import Event, EventType

UTC = UTC
APOLLO = "6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10"
ZEPHYR = "0b7e2a44-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
DEFAULT = "11111111-2222-3333-4444-555555555555"
NOW = datetime(2026, 3, 20, 18, 0, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


START, END = at(16, 9), at(16, 10)


def event(event_id: str = "AAMkEv1", *, start: datetime | date = START,
          end: datetime | date = END, **fields: Any) -> Event:
    fields.setdefault("type", EventType.SINGLE)
    fields.setdefault("subject", "Weekly sync")
    fields.setdefault("categories", ("Track",))
    fields.setdefault("show_as", "busy")
    fields.setdefault("response", "accepted")
    fields.setdefault("sensitivity", "normal")
    fields.setdefault("is_cancelled", False)
    fields.setdefault("is_all_day", False)
    return Event(id=event_id, start=start, end=end, **fields)


def user(**overrides: Any) -> UserConfig:
    data: dict[str, Any] = {
        "mailbox": "alice@contoso.example",
        "timezone": "Europe/Berlin",
        "select": {"categories": ["Track"]},
        "rules": [
            {"match": {"categories": ["Apollo"]}, "project": APOLLO, "name": "apollo"},
            {"match": {"subject": r"^\[ZEPHYR\]"}, "project": ZEPHYR},
        ],
        "default_project": DEFAULT,
    }
    data.update(overrides)
    return UserConfig.model_validate(data)
