"""Real ``syncd`` processes against the simulator: start, stop, kill, inspect.

Shared by the crash, fault and scale-out tests.  Nothing here reaches into
the product: processes are started the way an operator starts them, and
what happened is read from the simulator, the ledger database and the logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml
from sqlalchemy.engine import make_url

from syncd.sim import Simulator
from syncd.sim.scenario import Scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
APOLLO = "6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10"
SLOTS = ("08:00", "09:00", "10:00", "11:00", "13:00", "14:00", "15:00", "16:00")


def user_entry(index: int) -> dict[str, Any]:
    """A scenario user with its own InLoox contact and token."""
    return {
        "mailbox": f"u{index:03d}@contoso.example",
        "timezone": "UTC",
        "inloox": {
            "contact_id": f"00000000-0000-4000-8000-{index:012d}",
            "api_key": f"ilx_pat_u{index:03d}_k9Lw2Xv7Rk5Tz1Nc8Bm4",
        },
    }


def scenario(
    users: int, bookable: int, *, unbooked: int = 0, backdating_days: int = 30
) -> Scenario:
    """``users`` users with ``bookable`` Apollo meetings each (plus others).

    Meetings fall on the weekdays of the fortnight before this week, one an
    hour, so every one has ended and each user's are at distinct times.
    """
    keys = [user_entry(i)["mailbox"].split("@")[0] for i in range(users)]
    events = [_meeting(n, keys, ["Apollo"]) for n in range(bookable)]
    events += [_meeting(bookable + n, keys, []) for n in range(unbooked)]
    return parse_scenario(
        {
            "name": f"crash-{users}x{bookable}",
            "tenant_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "app": {
                "client_id": "0f4a9d6e-3b2c-4e51-8a7f-6d1e2c3b4a59",
                "client_secret": "sim~crash.2kW_fJ3nR5tY7uI9oP1aS3dF5gH7jK9",
            },
            "anchor": {"weeks_before_current": 2},
            "lookback": "21d",
            "settings": {"backdating_days": backdating_days, "page_size": 10},
            "projects": [
                {
                    "id": APOLLO,
                    "name": "Apollo",
                    "number": "P-1",
                    "categories": ["Apollo"],
                }
            ],
            "users": [user_entry(i) for i in range(users)],
            "events": events,
        }
    )


def _meeting(n: int, calendars: list[str], categories: list[str]) -> dict[str, Any]:
    week, rest = divmod(n, 5 * len(SLOTS))
    day, slot = divmod(rest, len(SLOTS))
    start = SLOTS[slot]
    return {
        "key": f"m{n}",
        "subject": f"Meeting {n}",
        "calendars": calendars,
        "day": week * 7 + day,
        "start": start,
        "duration": "45m",
        "timezone": "UTC",
        "categories": categories,
    }


def write_config(
    sim: Simulator, directory: Path, ledger_url: str, **overrides: Any
) -> Path:
    """The simulator's configuration, with fast timings for tests."""
    path = sim.write_config(directory, ledger_url=ledger_url)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["schedule"] = {"interval": "1s", "jitter": "0s"}
    # One create in flight, so a kill lands on exactly one step of one booking
    # (test_crash_concurrent.py kills with several in flight).
    config["http"] = {"timeout": "1s", "connect_timeout": "1s", "inloox_concurrency": 1}
    config["log"] = {"format": "json", "level": "info"}
    config["graph"]["page_size"] = 2
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Syncd:
    """One ``syncd`` process and its log file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines (of one event name) the process wrote so far."""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace")
        parsed = [_json_line(line) for line in lines.splitlines()]
        return [e for e in parsed if e and (name is None or e.get("event") == name)]


def start(sim: Simulator, config: Path, command: str, name: str) -> Syncd:
    """Start ``syncd <command> -c config`` as an operator would."""
    log_path = config.parent / f"{name}.log"
    env = {
        **os.environ,
        **sim.config_env(config.parent),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CI", None)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "syncd.cli", command, "-c", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.parent,
        )
    return Syncd(process, log_path)


def once(sim: Simulator, config: Path, name: str = "once") -> int:
    """Run ``syncd once`` to the end; its exit code."""
    return start(sim, config, "once", name).wait(90)


def wait_for(
    condition: Callable[[], object],
    timeout: float = 30,
    what: str = "condition",
    every: float = 0.02,
) -> Any:
    """Poll until ``condition()`` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def bookable_starts(sim: Simulator, mailbox: str) -> Counter[str]:
    """Start instants of the mailbox's Apollo meetings: one entry each is right."""
    return Counter(
        _utc(event["start"])
        for event in sim.calendar(mailbox).events()
        if "Apollo" in (event.get("categories") or [])
    )


def entry_starts(sim: Simulator, mailbox: str) -> Counter[str]:
    """Start instants of the InLoox entries performed by the mailbox's contact."""
    return Counter(e["StartDateTime"] for e in sim.inloox_entries(mailbox))


def _utc(value: dict[str, str]) -> str:
    return str(value["dateTime"])[:19] + "Z"


def _json_line(line: str) -> dict[str, Any] | None:
    start = line.find("{")
    if start < 0:
        return None
    try:
        parsed = json.loads(line[start:])
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


# ---- the ledger database, read and locked from outside ---------------------


def libpq(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg spells it."""
    return (
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


def ledger_rows(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of a read-only query against the ledger (SQLite or PostgreSQL)."""
    if url.startswith("sqlite"):
        import sqlite3

        path = make_url(url).database or ""
        with sqlite3.connect(path) as connection:
            return list(connection.execute(query.replace("%s", "?"), params))
    with psycopg.connect(libpq(url)) as connection:
        return list(connection.execute(query, params))  # type: ignore[arg-type]


def states(url: str) -> Counter[str]:
    """How many ledger records are in each state."""
    return Counter(
        dict(ledger_rows(url, "SELECT state, count(*) FROM events GROUP BY state"))
    )


def wait_leases_free(url: str, timeout: float = 30) -> None:
    """Wait until no lease is live (a killed process's leases ran out)."""

    def free() -> bool:
        rows = ledger_rows(
            url,
            "SELECT count(*) FROM leases WHERE owner IS NOT NULL "
            "AND expires_at > now()",
        )
        return rows[0][0] == 0

    wait_for(free, timeout, "the killed process's leases to expire")


def waiting_on_lock(url: str, statement: str) -> bool:
    """Whether some session waits for a lock while running ``statement``..."""
    rows = ledger_rows(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query ILIKE %s",
        statement + "%",
    )
    return bool(rows[0][0])


def held_lock(url: str, sql: str) -> psycopg.Connection[Any]:
    """An open transaction that ran ``sql`` (a lock); roll it back to release."""
    connection = psycopg.connect(libpq(url))
    connection.execute(sql)
    return connection
