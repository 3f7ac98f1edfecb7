"""Durations, time zones, regular expressions, rules and the model helpers."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from syncd.config import (
    UnknownUserError,
    format_duration,
    is_guid,
    load_config,
    parse_duration,
)
from syncd.errors import ConfigError, Problem

Write = Callable[..., Path]


def user_problems(
    write: Write, global_yaml: str, env: dict[str, str], text: str
) -> list[tuple[int | None, str, str]]:
    """(line, key, message) of each problem of a user file ``text``."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(global_yaml, alice=text), env=env)
    problems: list[Problem] = caught.value.problems
    return [(p.line, p.key, p.message) for p in problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("14d", timedelta(days=14)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1w2d", timedelta(days=9)),
        ("250ms", timedelta(milliseconds=250)),
        ("0s", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    """Durations are numbers with units, largest first."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("300", "'300' has no unit: write 300s, 300m, ..."),
        (
            "5 minutes",
            "'5 minutes' is not a duration: write e.g. 30s, 5m, 2h, 14d or 1h30m",
        ),
        ("30m1h", "'30m1h': write each unit once, largest first (like 1h30m)"),
        ("1h1h", "'1h1h': write each unit once, largest first (like 1h30m)"),
        (
            "",
            "empty duration: write a number with a unit, "
            "e.g. 30s, 5m, 2h, 14d or 1h30m",
        ),
        ("-5m", "'-5m' is not a duration: write e.g. 30s, 5m, 2h, 14d or 1h30m"),
    ],
)
def test_bad_durations(text: str, message: str) -> None:
    """A bad duration says what to write instead."""
    with pytest.raises(ValueError) as caught:
        parse_duration(text)

    assert str(caught.value) == message


def test_format_duration() -> None:
    """Durations are written back in the config's notation."""
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"
    assert format_duration(timedelta(days=14)) == "2w"
    assert format_duration(timedelta(0)) == "0s"


def test_duration_problem_in_user_file(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """Bad and non-positive durations are problems at their keys."""
    text = user_yaml + "lookback: 14\nmax_duration: 0s\nhorizon: 1d\n"

    assert user_problems(write, global_yaml, env, text) == [
        (3, "lookback", "'14' has no unit: write 14s, 14m, ..."),
        (4, "max_duration", "must be longer than 0s (got 0s)"),
    ]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "UTC"])
def test_iana_time_zones_are_accepted(
    write: Write, global_yaml: str, env: dict[str, str], zone: str
) -> None:
    """IANA zone names load as given."""
    text = f"mailbox: alice@contoso.example\ntimezone: {zone}\n"

    config = load_config(write(global_yaml, alice=text), env=env)

    assert config.users[0].timezone == zone


@pytest.mark.parametrize("zone", ["W. Europe Standard Time", "Europe/Berln", "../x"])
def test_unknown_time_zone_is_a_problem(
    write: Write, global_yaml: str, env: dict[str, str], zone: str
) -> None:
    """Windows names, typos and paths are not IANA zones."""
    text = f"mailbox: alice@contoso.example\ntimezone: {zone}\n"

    assert user_problems(write, global_yaml, env, text) == [
        (
            2,
            "timezone",
            f"unknown time zone {zone!r}: use an IANA name like "
            "Europe/Berlin or America/New_York (not a Windows name)",
        ),
    ]


def test_regex_compiled_and_checked(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """subject/location are compiled; an invalid one gives the regex error."""
    text = (
        user_yaml
        + """\
rules:
  - match: {subject: '(?i)^\\[apollo\\]'}
    project: Apollo
  - match:
      location: 'Room (1'
    project: Rooms
"""
    )

    assert user_problems(write, global_yaml, env, text) == [
        (
            7,
            "rules[1].match.location",
            "invalid regular expression 'Room (1': missing ), unterminated subpattern "
            "at position 5",
        ),
    ]


def test_rule_conditions_loaded(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """Every condition kind loads; addresses and domains are lower-cased."""
    text = (
        user_yaml
        + """\
rules:
  - match:
      categories: [Apollo]
      all_categories: [Billable, Apollo]
      subject: '^\\[APOLLO\\]'
      organizer: '@Contoso.Example'
      attendee_domain: '@Fabrikam.example'
      location: 'Room \\d+'
    project: 6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10
    task: Meetings
"""
    )

    match = load_config(write(global_yaml, alice=text), env=env).users[0].rules[0].match

    assert match.categories == ("Apollo",)
    assert match.all_categories == ("Billable", "Apollo")
    assert match.subject == re.compile(r"^\[APOLLO\]")
    assert match.organizer == "@contoso.example"
    assert match.attendee_domain == "fabrikam.example"
    assert match.location is not None and match.location.search("Room 12")


def test_rule_condition_mistakes(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """Empty lists, odd addresses and a missing project are each named."""
    text = (
        user_yaml
        + """\
rules:
  - match: {categories: []}
    project: A
  - match: {organizer: contoso}
  - match: {attendee_domain: 'nodot'}
    project: C
"""
    )

    assert user_problems(write, global_yaml, env, text) == [
        (
            4,
            "rules[0].match.categories",
            "an empty list never matches; list categories or remove it",
        ),
        (
            6,
            "rules[1].match.organizer",
            "must be an address (bob@contoso.example) or a domain with @ "
            "(@contoso.example), got 'contoso'",
        ),
        (6, "rules[1].project", "required key 'project' is missing; add it"),
        (
            7,
            "rules[2].match.attendee_domain",
            "must be a domain like contoso.example (got 'nodot')",
        ),
    ]


def test_the_inloox_category_cannot_select_or_map(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """'InLoox' (any case) marks events booked elsewhere: it can never select
    or map one, so naming it in select or a rule is a mistake."""
    text = (
        user_yaml
        + """\
select: {categories: [Track, inloox]}
rules:
  - match: {all_categories: [Apollo, InLoox]}
    project: A
"""
    )

    problems = user_problems(write, global_yaml, env, text)

    assert [(line, key) for line, key, _ in problems] == [
        (3, "select.categories"), (5, "rules[0].match.all_categories")]
    assert all("booked elsewhere" in message for _, _, message in problems)


def test_is_guid() -> None:
    """GUIDs are 8-4-4-4-12 hex digits; names are not."""
    assert is_guid("6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10")
    assert is_guid("6F1C0C52-7D6B-4F0E-9A43-2B1F3A2F9E10")
    assert not is_guid("Apollo Rollout")
    assert not is_guid("6f1c0c527d6b4f0e9a432b1f3a2f9e10")


def test_user_lookup(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """Config.user finds a mailbox in any letter case, else names the known ones."""
    config = load_config(write(global_yaml, alice=user_yaml), env=env)

    assert config.user("ALICE@contoso.example").mailbox == "alice@contoso.example"
    with pytest.raises(UnknownUserError) as caught:
        config.user("bob@contoso.example")
    assert "configured: alice@contoso.example" in str(caught.value)


def test_inline_users_come_before_users_d(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """Inline users load first, then users.d files in name order, .yml too."""
    inline = global_yaml + "users:\n  - {mailbox: zed@contoso.example, timezone: UTC}\n"
    path = write(inline, b=user_yaml.replace("alice", "bob"), a=user_yaml)
    (path.parent / "users.d" / "c.yml").write_text(user_yaml.replace("alice", "carl"))
    (path.parent / "users.d" / "notes.txt").write_text("not a user")

    config = load_config(path, env=env)

    assert [u.mailbox.split("@")[0] for u in config.users] == [
        "zed",
        "alice",
        "bob",
        "carl",
    ]
    assert config.users[0].source_file == path


def test_relative_paths_follow_the_config_file(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str], tmp_path: Path
) -> None:
    """tls.ca_bundle and graph.token_cache are relative to syncd.yaml."""
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    text = (
        global_yaml.replace(
            "  client_secret", "  token_cache: cache.bin\n  client_secret"
        )
        + "tls: {ca_bundle: ca.pem}\nmetrics: {listen: '127.0.0.1:9464'}\n"
    )

    config = load_config(write(text, alice=user_yaml), env=env)

    assert config.tls.ca_bundle == tmp_path / "ca.pem"
    assert config.graph.token_cache == tmp_path / "cache.bin"
    assert config.metrics.listen == "127.0.0.1:9464"


def test_import_is_light() -> None:
    """Importing syncd.config pulls in no HTTP, Graph, msal or SQL library."""
    code = (
        "import sys, syncd.config; heavy = [m for m in ('httpx', 'msal', "
        "'msgraph', 'sqlalchemy', 'structlog') if m in sys.modules]; "
        "print(heavy)"
    )

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )

    assert out.stdout.strip() == "[]"
