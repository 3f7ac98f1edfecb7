"""${VAR} references and secrets from the environment or credential files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.config import load_config, load_config_lenient
from syncd.config._interpolate import Environment, ExpansionError, expand
from syncd.errors import ConfigError, Problem

Write = Callable[..., Path]


def problems_of(path: Path, env: dict[str, str]) -> list[Problem]:
    """The problems load_config raises for ``path``."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    return caught.value.problems


def test_variable_and_default() -> None:
    """${VAR} reads the environment; ${VAR:-default} falls back when unset/empty."""
    environment = Environment({"HOST": "db.example", "EMPTY": ""})

    assert (
        expand("pg://${HOST}:${PORT:-5432}/x", environment) == "pg://db.example:5432/x"
    )
    assert expand("${EMPTY:-fallback}", environment) == "fallback"
    assert expand("${EMPTY}", environment) == ""


def test_dollar_dollar_brace_is_literal() -> None:
    """$${ writes a literal ${ (for a regex, say)."""
    assert expand(r"^\$$${x}", Environment({})) == r"^\$${x}"


def test_unset_variable_is_named() -> None:
    """An unset variable without default names the variable."""
    with pytest.raises(ExpansionError) as caught:
        expand("${SYNCD_TENANT}", Environment({}))

    assert str(caught.value) == (
        "environment variable SYNCD_TENANT is not set; set it or write "
        "${SYNCD_TENANT:-default}"
    )


def test_reference_syntax_errors() -> None:
    """Unclosed and malformed references are refused."""
    with pytest.raises(ExpansionError, match="unclosed"):
        expand("${HOME", Environment({}))
    with pytest.raises(ExpansionError, match="not a valid reference"):
        expand("${1X}", Environment({}))


def test_expansion_in_any_value(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """Non-secret values expand too, and then get their type."""
    path = write(
        global_yaml.replace("contoso.example\n", "${TENANT}\n")
        + "http: {max_concurrency: '${MAXC:-8}'}\n",
        alice=user_yaml,
    )

    config = load_config(path, env={**env, "TENANT": "t-1"})

    assert config.graph.authority == "https://login.microsoftonline.com/t-1"
    assert config.http.max_concurrency == 8


def test_missing_variable_problem_has_line(
    write: Write, global_yaml: str, user_yaml: str
) -> None:
    """A missing secret variable is a problem at its key, naming the variable."""
    path = write(global_yaml, alice=user_yaml)

    problems = problems_of(path, {"API_KEY": "k"})

    assert [(p.line, p.key, p.message) for p in problems] == [
        (
            6,
            "graph.client_secret",
            "environment variable SECRET is not set; set it "
            "or create $CREDENTIALS_DIRECTORY/graph.client_secret",
        )
    ]


def test_secret_values_are_secretstr(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """Secrets load as SecretStr, hidden from repr."""
    config = load_config(write(global_yaml, alice=user_yaml), env=env)

    assert config.graph.client_secret is not None
    assert config.graph.client_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)
    assert "k3y" not in repr(config)


@pytest.mark.parametrize("literal", ["hunter2", "'${API_KEY}x'", "12345"])
def test_literal_secret_is_refused(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str], literal: str
) -> None:
    """A secret written in YAML (not a lone reference) is a problem."""
    path = write(global_yaml.replace("${API_KEY}", literal), alice=user_yaml)

    problems = problems_of(path, env)

    assert [(p.line, p.key) for p in problems] == [(9, "inloox.api_key")]
    assert problems[0].message.startswith("secrets never live in YAML: write ${VAR}")
    assert "hunter2" not in problems[0].message


def test_secret_default_must_be_empty(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """${VAR:-hunter2} hides a literal secret; ${VAR:-} is fine."""
    path = write(global_yaml.replace("${SECRET}", "${NOPE:-hunter2}"), alice=user_yaml)

    problems = problems_of(path, env)

    assert [(p.line, p.key) for p in problems] == [(6, "graph.client_secret")]
    assert "must be empty" in problems[0].message


def test_empty_secret_means_none(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """An empty secret (literal '' or ${VAR:-}) is simply not set."""
    path = write(
        global_yaml.replace(
            "  api_key: ${API_KEY}", "  api_key: ''\n  token: ${TOKEN:-}"
        ),
        alice=user_yaml + "inloox:\n  token: ${ALICE_TOKEN}\n",
    )

    config = load_config(path, env={**env, "ALICE_TOKEN": "t"})

    assert (config.inloox.api_key, config.inloox.token) == (None, None)
    assert config.inloox_credentials(config.users[0]).token is not None


def test_credentials_directory_by_key_name(
    write: Write, global_yaml: str, user_yaml: str, tmp_path: Path
) -> None:
    """Absent or unset secrets come from $CREDENTIALS_DIRECTORY/<key>."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "graph.client_secret").write_text("from-file\n")
    (creds / "inloox.api_key").write_text("key-file")
    (creds / "alice@contoso.example.inloox.token").write_text("alice-token")
    path = write(global_yaml.replace("  api_key: ${API_KEY}\n", ""), alice=user_yaml)

    config = load_config(path, env={"CREDENTIALS_DIRECTORY": str(creds)})

    assert config.graph.client_secret is not None
    assert config.graph.client_secret.get_secret_value() == "from-file"
    assert config.inloox.api_key is not None
    assert config.inloox.api_key.get_secret_value() == "key-file"
    alice = config.users[0].inloox
    assert alice is not None and alice.token is not None
    assert alice.token.get_secret_value() == "alice-token"


def test_set_variable_wins_over_credential_file(
    write: Write, global_yaml: str, user_yaml: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """A set ${VAR} is used even when a credential file exists."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "graph.client_secret").write_text("from-file")
    path = write(global_yaml, alice=user_yaml)

    config = load_config(path, env={**env, "CREDENTIALS_DIRECTORY": str(creds)})

    assert config.graph.client_secret is not None
    assert config.graph.client_secret.get_secret_value() == "s3cret"


def test_file_reference(
    write: Write, global_yaml: str, user_yaml: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """${file:NAME} reads any credential file; a missing one is a problem."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "inloox-key").write_text("k-file\n")
    path = write(
        global_yaml.replace("${API_KEY}", "${file:inloox-key}"),
        alice=user_yaml + "inloox:\n  api_key: ${file:alice-key}\n",
    )

    result = load_config_lenient(path, env={**env, "CREDENTIALS_DIRECTORY": str(creds)})

    assert result.config is not None
    assert result.config.inloox.api_key is not None
    assert result.config.inloox.api_key.get_secret_value() == "k-file"
    assert [(Path(p.file).name, p.line, p.key, p.message) for p in result.problems] == [
        (
            "alice.yaml",
            4,
            "inloox.api_key",
            f"${{file:alice-key}}: create {creds / 'alice-key'}",
        )
    ]


def test_misplaced_secret_is_not_echoed(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """A key written as `inloox: <secret>` is refused without showing the value."""
    path = write(global_yaml, alice=user_yaml + "inloox: hunter2\n")

    problems = problems_of(path, env)

    assert [(p.line, p.key, p.message) for p in problems] == [
        (3, "inloox", "must be a mapping of keys")
    ]


def test_user_credential_file_in_lower_case(
    write: Write, global_yaml: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """Mailbox ALICE@Contoso.Example finds alice@contoso.example.inloox.api_key."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "alice@contoso.example.inloox.api_key").write_text("lower-key\n")
    path = write(global_yaml, alice="mailbox: ALICE@Contoso.Example\ntimezone: UTC\n")

    config = load_config(path, env={**env, "CREDENTIALS_DIRECTORY": str(creds)})

    own = config.users[0].inloox
    assert own is not None and own.api_key is not None
    assert own.api_key.get_secret_value() == "lower-key"


def test_user_credential_file_exact_case_first(
    write: Write, global_yaml: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """The file named with the mailbox exactly as written wins over lower case."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "alice@contoso.example.inloox.token").write_text("lower-token")
    (creds / "Alice@contoso.example.inloox.token").write_text("exact-token")
    path = write(global_yaml, alice="mailbox: Alice@contoso.example\ntimezone: UTC\n")

    config = load_config(path, env={**env, "CREDENTIALS_DIRECTORY": str(creds)})

    own = config.users[0].inloox
    assert own is not None and own.token is not None
    assert own.token.get_secret_value() == "exact-token"


def test_missing_user_credential_names_the_lower_case_file(
    write: Write, global_yaml: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """An unset ${VAR} of a user's key points at the canonical lower-case file."""
    path = write(
        global_yaml,
        alice="mailbox: ALICE@Contoso.Example\ntimezone: UTC\n"
        "inloox:\n  api_key: ${ALICE_KEY}\n",
    )

    problems = problems_of(path, {**env, "CREDENTIALS_DIRECTORY": str(tmp_path)})

    assert [(p.line, p.key, p.message) for p in problems] == [
        (
            4,
            "inloox.api_key",
            "environment variable ALICE_KEY is not set; set it or create "
            "$CREDENTIALS_DIRECTORY/alice@contoso.example.inloox.api_key",
        )
    ]
