"""Scenario files: the tenant, its users, their calendars and InLoox projects.

A scenario is YAML (schema in ``scenarios/README.md``).  Event days are
offsets from an *anchor* Monday, so the default scenario always describes the
fortnight before the current week, whatever today is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

WEEKDAYS = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
_DAY_ALIASES = {name[:3]: name for name in WEEKDAYS}


def weekday_index(name: str) -> int:
    """0 for ``monday`` (or ``mon``, any case) to 6 for ``sunday``."""
    full = _DAY_ALIASES.get(str(name).lower()[:3])
    if full is None or not full.startswith(str(name).lower()):
        raise ValueError(f"not a weekday: {name!r} (monday..sunday or mon..sun)")
    return WEEKDAYS.index(full)
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ScenarioError(ValueError):
    """The scenario file is not valid; the message names the key."""


@dataclass(frozen=True)
class Project:
    project_id: str
    name: str
    number: str
    categories: tuple[str, ...] = ()
    subject_prefix: str | None = None


@dataclass(frozen=True)
class User:
    mailbox: str
    name: str
    timezone: str
    contact_id: str
    api_key: str

    @property
    def key(self) -> str:
        """The short name scenario events use to point at this user."""
        return self.mailbox.split("@", 1)[0].lower()


@dataclass(frozen=True)
class Recurrence:
    days: tuple[str, ...]  # weekday names, lower case
    interval_weeks: int
    until_day: int  # inclusive, anchor-relative


@dataclass(frozen=True)
class EventSpec:
    """One event (or series) as the scenario describes it, before placement."""

    key: str
    subject: str
    calendars: tuple[str, ...]
    organizer: str
    day: int
    start: time | None
    end: time | None
    end_day: int
    timezone: str | None
    all_day: bool
    fields: dict[str, Any]
    per_user: dict[str, dict[str, Any]]
    recurrence: Recurrence | None = None
    exceptions: tuple[dict[str, Any], ...] = ()
    deleted_days: tuple[int, ...] = ()


@dataclass(frozen=True)
class Settings:
    token_lifetime: int = 3600
    device_code_interval: int = 1
    backdating_days: int = 30
    create_response: str = "entity201"
    page_size: int = 10
    inloox_page_size: int = 100
    id_seed: str = "syncd-sim"
    entry_visibility: str = "own"  # or "all": keys read every performer's entries


@dataclass(frozen=True)
class Scenario:
    name: str
    tenant_id: str
    client_id: str
    client_secret: str
    anchor: date | int  # a fixed Monday, or weeks before the current week
    users: tuple[User, ...]
    projects: tuple[Project, ...]
    events: tuple[EventSpec, ...]
    settings: Settings = field(default_factory=Settings)
    trigger_categories: tuple[str, ...] = ("Track",)
    lookback: str = "21d"

    def anchor_date(self, today: date) -> date:
        """The Monday that event day 0 falls on."""
        if isinstance(self.anchor, date):
            return self.anchor
        this_monday = today - timedelta(days=today.weekday())
        return this_monday - timedelta(weeks=self.anchor)

    def user(self, name_or_mailbox: str) -> User:
        try:
            return self._user_index[name_or_mailbox.lower()]
        except KeyError:
            raise KeyError(name_or_mailbox) from None

    def user_by_key(self, api_key: str) -> User | None:
        """The user whose InLoox personal access token this is."""
        return self._api_key_index.get(api_key)

    @cached_property
    def _user_index(self) -> dict[str, User]:
        """Users by short key and by lower-cased mailbox (thousands in benchmarks)."""
        index: dict[str, User] = {}
        for user in reversed(self.users):  # the first one wins, as before
            index[user.mailbox.lower()] = user
            index[user.key] = user
        return index

    @cached_property
    def _api_key_index(self) -> dict[str, User]:
        index: dict[str, User] = {}
        for user in reversed(self.users):
            index[user.api_key] = user
        return index


def default_scenario_path() -> Path:
    """The shipped scenario: three users over the fortnight before this week."""
    return Path(str(resources.files("syncd.sim") / "scenarios" / "default.yaml"))


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read and validate a scenario file (the default one for ``None``)."""
    source = Path(path) if path is not None else default_scenario_path()
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{source}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping")
    return parse_scenario(raw, name=source.stem)


def parse_scenario(raw: dict[str, Any], *, name: str = "scenario") -> Scenario:
    app = _mapping(raw, "app")
    users = tuple(_user(u, i) for i, u in enumerate(_list(raw, "users")))
    if not users:
        raise ScenarioError("users: at least one user is needed")
    scenario = Scenario(
        name=str(raw.get("name", name)),
        tenant_id=_str(raw, "tenant_id"),
        client_id=_str(app, "client_id"),
        client_secret=_str(app, "client_secret"),
        anchor=_anchor(raw.get("anchor", {"weeks_before_current": 2})),
        users=users,
        projects=tuple(_project(p, i) for i, p in enumerate(_list(raw, "projects"))),
        events=(),
        settings=_settings(raw.get("settings") or {}),
        trigger_categories=tuple(raw.get("trigger_categories", ["Track"])),
        lookback=str(raw.get("lookback", "21d")),
    )
    keys = {u.key for u in users}
    events = tuple(
        _event(e, i, scenario, keys) for i, e in enumerate(_list(raw, "events"))
    )
    return replace(scenario, events=events)


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise ScenarioError(f"not a duration: {text!r} (use 30m, 2h, 1d)")
    return timedelta(seconds=int(match[1]) * _DURATION_UNITS[match[2]])


def _anchor(value: Any) -> date | int:
    if isinstance(value, date):
        return value
    if isinstance(value, dict) and "weeks_before_current" in value:
        return int(value["weeks_before_current"])
    raise ScenarioError("anchor: a date or {weeks_before_current: N}")


def _settings(raw: dict[str, Any]) -> Settings:
    known = set(Settings.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ScenarioError(f"settings: unknown keys {sorted(unknown)}")
    if raw.get("entry_visibility", "own") not in ("own", "all"):
        raise ScenarioError("settings.entry_visibility: own or all")
    return Settings(**raw)


def _user(raw: Any, index: int) -> User:
    where = f"users[{index}]"
    inloox = _mapping(raw, "inloox", where)
    return User(
        mailbox=_str(raw, "mailbox", where),
        name=str(raw.get("name", raw["mailbox"])),
        timezone=str(raw.get("timezone", "UTC")),
        contact_id=_str(inloox, "contact_id", f"{where}.inloox"),
        api_key=_str(inloox, "api_key", f"{where}.inloox"),
    )


def _project(raw: Any, index: int) -> Project:
    where = f"projects[{index}]"
    return Project(
        project_id=_str(raw, "id", where),
        name=_str(raw, "name", where),
        number=str(raw.get("number", "")),
        categories=tuple(raw.get("categories", [])),
        subject_prefix=raw.get("subject_prefix"),
    )


_EVENT_FIELDS = {
    "categories",
    "show_as",
    "sensitivity",
    "response",
    "location",
    "is_cancelled",
    "body",
    "attendees",
    "importance",
}


def _event(raw: Any, index: int, scenario: Scenario, keys: set[str]) -> EventSpec:
    where = f"events[{index}]"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: an event is a mapping")
    calendars = tuple(str(c).lower() for c in raw.get("calendars", []))
    if not calendars or not set(calendars) <= keys:
        raise ScenarioError(f"{where}.calendars: user keys among {sorted(keys)}")
    organizer = str(raw.get("organizer", calendars[0])).lower()
    all_day = bool(raw.get("all_day", False))
    day = int(raw.get("day", 0))
    start, end, end_day = _times(raw, where, all_day, day)
    return EventSpec(
        key=str(raw.get("key", f"event{index}")),
        subject=_str(raw, "subject", where),
        calendars=calendars,
        organizer=organizer,
        day=day,
        start=start,
        end=end,
        end_day=end_day,
        timezone=raw.get("timezone"),
        all_day=all_day,
        fields={k: v for k, v in raw.items() if k in _EVENT_FIELDS},
        per_user={
            str(k).lower(): dict(v) for k, v in (raw.get("per_user") or {}).items()
        },
        recurrence=_recurrence(raw.get("recurrence"), where, day),
        exceptions=tuple(raw.get("exceptions", [])),
        deleted_days=tuple(int(d) for d in raw.get("deleted_days", [])),
    )


def _times(
    raw: dict[str, Any], where: str, all_day: bool, day: int
) -> tuple[time | None, time | None, int]:
    """Start and end clock times, and the day the event ends on."""
    if all_day:
        return None, None, day + int(raw.get("days", 1))
    start = _clock_time(raw.get("start"), f"{where}.start")
    if "duration" in raw:
        moment = datetime.combine(date(2000, 1, 1), start)
        finish = moment + parse_duration(str(raw["duration"]))
        return start, finish.time(), day + (finish.date() - moment.date()).days
    end = _clock_time(raw.get("end"), f"{where}.end")
    overnight = 1 if end <= start else 0
    return start, end, day + int(raw.get("end_day_offset", overnight))


def _clock_time(value: Any, where: str) -> time:
    if isinstance(value, int):  # YAML 1.1 reads 09:30 as sexagesimal minutes
        return time(value // 60, value % 60)
    try:
        return time.fromisoformat(str(value))
    except ValueError as exc:
        raise ScenarioError(f"{where}: a time like '09:30'") from exc


def _recurrence(raw: Any, where: str, first_day: int) -> Recurrence | None:
    if raw is None:
        return None
    days = tuple(_DAY_ALIASES.get(str(d).lower()[:3], "") for d in raw.get("days", []))
    if not days or "" in days:
        raise ScenarioError(f"{where}.recurrence.days: weekday names like mon, tue")
    return Recurrence(
        days=days,
        interval_weeks=int(raw.get("interval_weeks", 1)),
        until_day=int(raw.get("until_day", first_day + 13)),
    )


def _mapping(raw: Any, key: str, where: str = "") -> dict[str, Any]:
    value = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(value, dict):
        raise ScenarioError(f"{_path(where, key)}: a mapping is needed")
    return value


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise ScenarioError(f"{key}: a list is needed")
    return value


def _str(raw: Any, key: str, where: str = "") -> str:
    value = raw.get(key) if isinstance(raw, dict) else None
    if value is None or value == "":
        raise ScenarioError(f"{_path(where, key)}: a value is needed")
    return str(value)


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
