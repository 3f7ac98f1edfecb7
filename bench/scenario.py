"""Generated simulator scenarios: many users, each with the same calendar shape."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

PROJECT_ID = "6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10"
BOOKABLE_CATEGORY = "Apollo"  # matched by the project's rule: a trigger
DAYS = 13  # events fall on the 13 days before today, all of them ended
FIRST_HOUR = 7


@dataclass(frozen=True)
class Shape:
    """How many users, how many events each, and whether they get booked."""

    users: int
    events: int
    bookable: bool = True
    prefix: str = "u"
    lookback: str = "14d"


def mailbox(prefix: str, index: int) -> str:
    return f"{prefix}{index:05d}@bench.example"


def scenario(shapes: list[Shape], today: date) -> dict[str, Any]:
    """A scenario dict (the schema of ``syncd/sim/scenarios/README.md``).

    Every user gets ``events`` single 30-minute events on the 13 days before
    ``today`` (so a 14-day lookback holds them all), in UTC.
    """
    users: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for shape in shapes:
        for index in range(shape.users):
            key = mailbox(shape.prefix, index).split("@", 1)[0]
            users.append(_user(shape, index))
            events.extend(_event(key, n, shape.bookable) for n in range(shape.events))
    return {
        "name": "bench",
        "tenant_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "app": {
            "client_id": "0f4a9d6e-3b2c-4e51-8a7f-6d1e2c3b4a59",
            "client_secret": "bench~" + uuid.uuid4().hex,
        },
        "anchor": today - timedelta(days=DAYS),
        "lookback": shapes[0].lookback,
        "trigger_categories": ["Track"],
        "settings": {"backdating_days": 30, "page_size": 10},
        "projects": [
            {
                "id": PROJECT_ID,
                "name": "Apollo",
                "number": "P-1",
                "categories": [BOOKABLE_CATEGORY],
            }
        ],
        "users": users,
        "events": events,
    }


def _user(shape: Shape, index: int) -> dict[str, Any]:
    address = mailbox(shape.prefix, index)
    return {
        "mailbox": address,
        "name": address.split("@", 1)[0],
        "timezone": "UTC",
        "inloox": {
            "contact_id": str(uuid.uuid4()),
            "api_key": "ilx_pat_bench_" + uuid.uuid4().hex,
        },
    }


def _event(key: str, n: int, bookable: bool) -> dict[str, Any]:
    hour, slot = divmod(n // DAYS, 2)
    start = f"{FIRST_HOUR + hour:02d}:{30 * slot:02d}"
    return {
        "key": f"{key}-e{n}",
        "subject": f"Meeting {n}",
        "calendars": [key],
        "day": n % DAYS,
        "start": start,
        "duration": "30m",
        "timezone": "UTC",
        "categories": [BOOKABLE_CATEGORY] if bookable else ["Personal"],
    }
