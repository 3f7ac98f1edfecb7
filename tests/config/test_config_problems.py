"""Every problem is reported with its file, line and key path, all at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.config import format_problems, load_config, load_config_lenient
from syncd.errors import ConfigError, Problem

Write = Callable[..., Path]


def problems_of(path: Path, env: dict[str, str]) -> list[Problem]:
    """The problems load_config raises for ``path``."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    return caught.value.problems


def located(problems: list[Problem]) -> list[tuple[str, int | None, str]]:
    """(file name, line, key) of each problem."""
    return [(Path(p.file).name, p.line, p.key) for p in problems]


def test_unknown_top_level_key(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """A misspelt key is refused with the likely intended one."""
    path = write(global_yaml + "schedul:\n  interval: 5m\n", alice=user_yaml)

    [problem] = problems_of(path, env)

    assert (problem.file, problem.line, problem.key) == (str(path), 11, "schedul")
    assert problem.message.startswith(
        "unknown key 'schedul': did you mean 'schedule'? remove or rename it"
    )


def test_unknown_nested_key_in_inline_user(
    write: Write, global_yaml: str, env: dict[str, str]
) -> None:
    """An inline user's unknown key is located as users[0].rules[1].projet."""
    inline = (
        global_yaml
        + """\
users:
  - mailbox: carol@contoso.example
    timezone: UTC
    rules:
      - match: {categories: [A]}
        project: A
      - match: {categories: [B]}
        projet: B
"""
    )
    path = write(inline, bob="mailbox: bob@contoso.example\ntimezone: UTC\n")

    problems = problems_of(path, env)

    assert located(problems) == [
        ("syncd.yaml", 17, "users[0].rules[1].project"),
        ("syncd.yaml", 18, "users[0].rules[1].projet"),
    ]
    assert problems[0].message == "required key 'project' is missing; add it"


def test_missing_section_points_at_its_parent(
    write: Write, user_yaml: str, env: dict[str, str]
) -> None:
    """A missing required key is reported at the mapping that lacks it."""
    path = write(
        """\
ledger: {url: 'sqlite://'}
graph:
  client_id: app
  auth: device_code
inloox:
  base_url: https://contoso.inloox.app/odata
  api_key: ${API_KEY}
users_dir: users.d
""",
        alice=user_yaml,
    )

    problems = problems_of(path, env)

    assert located(problems) == [("syncd.yaml", 2, "graph.authority")]
    assert problems[0].message == "required key 'authority' is missing; add it"


def test_three_mistakes_in_one_file(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """Three mistakes in syncd.yaml are all named, in line order."""
    bad = (
        global_yaml.replace("https://login", "http://login").replace(
            "url: sqlite:///ledger.db", "url: ledger.db"
        )
        + "schedule:\n  interval: 5 minutes\n"
    )
    path = write(bad, alice=user_yaml)

    problems = problems_of(path, env)

    assert located(problems) == [
        ("syncd.yaml", 2, "ledger.url"),
        ("syncd.yaml", 4, "graph.authority"),
        ("syncd.yaml", 12, "schedule.interval"),
    ]
    assert problems[1].message.startswith("must start with https://")


def test_bad_user_file_does_not_hide_others(
    write: Write, global_yaml: str, env: dict[str, str]
) -> None:
    """Problems of syncd.yaml and of two user files are reported together."""
    path = write(
        global_yaml + "log: {level: loud}\n",
        a_bad="mailbox: not-an-address\ntimezone: UTC\n",
        b_good="mailbox: bob@contoso.example\ntimezone: UTC\n",
        c_bad="mailbox: carol@contoso.example\ntimezone: Mars/Olympus\n",
    )

    problems = problems_of(path, env)

    assert located(problems) == [
        ("syncd.yaml", 11, "log.level"),
        ("a_bad.yaml", 1, "mailbox"),
        ("c_bad.yaml", 2, "timezone"),
    ]


def test_lenient_keeps_the_valid_users(
    write: Write, global_yaml: str, env: dict[str, str]
) -> None:
    """A bad user file is left out; the other users are loaded."""
    path = write(
        global_yaml,
        a_bad="mailbox: alice@contoso.example\ntimezone: UTC\nlookback: 2 weeks\n",
        b_good="mailbox: bob@contoso.example\ntimezone: UTC\n",
    )

    result = load_config_lenient(path, env=env)

    assert result.config is not None
    assert [u.mailbox for u in result.config.users] == ["bob@contoso.example"]
    assert located(list(result.problems)) == [("a_bad.yaml", 3, "lookback")]
    assert result.rejected == (str(path.parent / "users.d" / "a_bad.yaml"),)
    assert not result.ok


def test_lenient_global_problem_is_fatal(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """A problem in syncd.yaml leaves no config, only problems."""
    path = write(global_yaml + "pass_timeout: 0s\n", alice=user_yaml)

    result = load_config_lenient(path, env=env)

    assert result.config is None
    assert [(p.line, p.key, p.message) for p in result.problems] == [
        (11, "pass_timeout", "must be longer than 0s (got 0s)")
    ]


def test_yaml_syntax_error_has_its_line(
    write: Write, global_yaml: str, env: dict[str, str]
) -> None:
    """A broken user file is a problem at the line of the syntax error."""
    path = write(global_yaml, alice="mailbox: a@b.example\nrules: [\n  {x: 1\n")

    problems = problems_of(path, env)

    assert [(Path(p.file).name, p.key) for p in problems] == [("alice.yaml", "")]
    assert problems[0].line == 4
    assert problems[0].message.startswith("YAML syntax error:")


def test_duplicate_key_in_one_mapping(
    write: Write, global_yaml: str, env: dict[str, str]
) -> None:
    """A key written twice is a problem at the second one."""
    path = write(
        global_yaml,
        alice="""\
mailbox: alice@contoso.example
timezone: UTC
timezone: Europe/Berlin
""",
    )

    problems = problems_of(path, env)

    assert located(problems) == [("alice.yaml", 3, "timezone")]
    assert problems[0].message == "key 'timezone' appears twice here; keep only one"


def test_duplicate_mailbox_across_files(
    write: Write, global_yaml: str, env: dict[str, str]
) -> None:
    """The same mailbox in two files (any letter case) names the first one."""
    path = write(
        global_yaml,
        alice="mailbox: alice@contoso.example\ntimezone: UTC\n",
        alice2="# copy\nmailbox: Alice@Contoso.example\ntimezone: UTC\n",
    )

    result = load_config_lenient(path, env=env)

    first = path.parent / "users.d" / "alice.yaml"
    assert [(Path(p.file).name, p.line, p.key, p.message) for p in result.problems] == [
        (
            "alice2.yaml",
            2,
            "mailbox",
            "mailbox alice@contoso.example is already "
            f"configured at {first}:1; remove one of them",
        )
    ]
    assert result.config is not None
    assert [u.source_file for u in result.config.users] == [first]


def test_client_credentials_needs_a_secret(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """auth: client_credentials without client_secret says how to give one."""
    path = write(
        global_yaml.replace("  client_secret: ${SECRET}\n", ""), alice=user_yaml
    )

    problems = problems_of(path, env)

    assert located(problems) == [("syncd.yaml", 3, "graph")]
    assert "client_secret: ${SYNCD_GRAPH_CLIENT_SECRET}" in problems[0].message


def test_api_key_and_token_together(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """InLoox takes an api_key or a token, not both."""
    path = write(
        global_yaml.replace("users_dir", "  token: ${API_KEY}\nusers_dir"),
        alice=user_yaml,
    )

    problems = problems_of(path, env)

    assert [(p.line, p.key, p.message) for p in problems] == [
        (7, "inloox", "give api_key or token, not both; remove one")
    ]


def test_user_without_any_inloox_credential(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """No credential globally nor in the user file is that user's problem."""
    path = write(
        global_yaml.replace("  api_key: ${API_KEY}\n", ""),
        alice=user_yaml,
        bob=user_yaml.replace("alice", "bob") + "inloox:\n  token: ${T}\n",
    )

    result = load_config_lenient(path, env={**env, "T": "tok"})

    assert located(list(result.problems)) == [("alice.yaml", 1, "inloox")]
    assert result.config is not None
    assert [u.mailbox for u in result.config.users] == ["bob@contoso.example"]


def test_no_users_at_all(write: Write, global_yaml: str, env: dict[str, str]) -> None:
    """An empty users.d and no inline users is a problem of syncd.yaml."""
    path = write(global_yaml)

    problems = problems_of(path, env)

    assert located(problems) == [("syncd.yaml", 1, "users")]
    assert problems[0].message.startswith("no users configured")


def test_users_dir_must_exist(
    write: Write, global_yaml: str, env: dict[str, str]
) -> None:
    """A users_dir that is not a directory is reported at its line."""
    path = write(global_yaml.replace("users_dir: users.d", "users_dir: people.d"))

    problems = problems_of(path, env)

    assert located(problems) == [("syncd.yaml", 10, "users_dir")]
    assert problems[0].message.startswith("no such directory:")


def test_wrong_types_say_what_to_write(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """Type mistakes are explained in the config's own words."""
    extra = user_yaml + "tag_event: maybe\non_cancel: delete\nskip: [all_day]\n"
    path = write(global_yaml, alice=extra)

    problems = problems_of(path, env)

    assert [(p.line, p.key, p.message) for p in problems] == [
        (3, "tag_event", "must be true or false (got 'maybe')"),
        (4, "on_cancel", "must be 'retract' or 'keep' (got 'delete')"),
        (5, "skip", "must be a mapping of keys (got ['all_day'])"),
    ]


def test_format_problems_lists_then_counts() -> None:
    """check-config prints file:line: key: message lines, then the count."""
    problems = [
        Problem("syncd.yaml", 4, "graph.authority", "must start with https://"),
        Problem("users.d/a.yaml", None, "", "cannot read the file"),
    ]

    assert format_problems(problems) == (
        "syncd.yaml:4: graph.authority: must start with https://\n"
        "users.d/a.yaml: cannot read the file\n"
        "2 configuration problems found"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty: it needs at least ledger, graph and inloox"),
        (
            "# only a comment\n",
            "the file is empty: it needs at least ledger, graph and inloox",
        ),
        (
            "- ledger\n",
            "must be a mapping of keys; it needs at least ledger, graph and inloox",
        ),
        ("ledger: [\n", "YAML syntax error: "),
    ],
)
def test_unusable_file_is_one_problem(
    write: Write, env: dict[str, str], text: str, message: str
) -> None:
    """An empty, non-mapping or broken syncd.yaml is not also 'no users configured'."""
    path = write(text)

    problems = problems_of(path, env)

    assert [(p.key, p.message[: len(message)]) for p in problems] == [("", message)]


def test_unreadable_file_is_one_problem(tmp_path: Path, env: dict[str, str]) -> None:
    """A syncd.yaml that cannot be read gives that problem only."""
    path = tmp_path / "missing.yaml"

    problems = problems_of(path, env)

    assert [(p.file, p.key) for p in problems] == [(str(path), "")]
    assert problems[0].message.startswith("cannot read the file: ")


def test_users_dir_that_is_a_file(
    write: Write, global_yaml: str, env: dict[str, str], tmp_path: Path
) -> None:
    """users_dir naming a file says so, instead of 'no such directory'."""
    path = write(global_yaml.replace("users_dir: users.d", "users_dir: syncd.yaml"))

    problems = problems_of(path, env)

    assert [(p.line, p.key, p.message) for p in problems] == [
        (
            10,
            "users_dir",
            f"{tmp_path / 'syncd.yaml'} is a file, not a directory: point users_dir "
            "at the directory of user files (relative to this file), like users.d",
        )
    ]


def test_directory_named_like_a_user_file(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str], tmp_path: Path
) -> None:
    """users.d/dir.yaml/ is a problem of its own; the other users still load."""
    path = write(global_yaml, alice=user_yaml)
    directory = tmp_path / "users.d" / "dir.yaml"
    directory.mkdir()

    result = load_config_lenient(path, env=env)

    assert [(p.file, p.line, p.key, p.message) for p in result.problems] == [
        (
            str(directory),
            None,
            "",
            "is a directory, not a user file: move the user files out of it "
            "or rename it so that its name does not end in .yaml or .yml",
        )
    ]
    assert result.rejected == (str(directory),)
    assert result.config is not None
    assert [u.mailbox for u in result.config.users] == ["alice@contoso.example"]
