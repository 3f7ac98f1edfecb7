"""ledger.url: one ledger whatever the working directory, only drivers syncd ships."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from syncd.config import LedgerConfig, load_config, load_config_lenient
from syncd.errors import ConfigError, Problem

Write = Callable[..., Path]
ROOT = Path(__file__).resolve().parents[2]
SQLITE_FORMS = (
    "write sqlite:///PATH (relative to this file) or sqlite:////ABSOLUTE/PATH"
)
PSYCOPG = "write postgresql+psycopg://user@host/syncd"


def with_url(global_yaml: str, url: str) -> str:
    """``global_yaml`` with ``ledger.url`` set to ``url`` (quoted)."""
    return global_yaml.replace("url: sqlite:///ledger.db", f"url: '{url}'")


def ledger_url(path: Path, env: dict[str, str]) -> str:
    """The ledger URL ``load_config`` gives for ``path``."""
    return load_config(path, env=env).ledger.url


def ledger_problems(path: Path, env: dict[str, str]) -> list[Problem]:
    """The problems load_config raises for ``path``, all at ledger.url, line 2."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    problems = caught.value.problems
    assert [(p.line, p.key) for p in problems] == [(2, "ledger.url")] * len(problems)
    return problems


# --- SQLite paths ----------------------------------------------------------------


def test_relative_sqlite_path_is_relative_to_the_config_file(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str], tmp_path: Path
) -> None:
    """sqlite:///ledger.db is the file next to syncd.yaml: four slashes after load."""
    path = write(global_yaml, alice=user_yaml)

    assert ledger_url(path, env) == f"sqlite:///{tmp_path}/ledger.db"
    assert ledger_url(path, env).startswith("sqlite:////")


def test_same_ledger_from_any_working_directory(
    write: Write,
    global_yaml: str,
    user_yaml: str,
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two runs from different directories, with a relative -c, share one ledger."""
    write(with_url(global_yaml, "sqlite:///state/ledger.db"), alice=user_yaml)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    expected = f"sqlite:///{tmp_path.resolve()}/state/ledger.db"

    monkeypatch.chdir(tmp_path)
    from_config_dir = ledger_url(Path("syncd.yaml"), env)
    monkeypatch.chdir(elsewhere)
    from_elsewhere = ledger_url(Path("../syncd.yaml"), env)

    assert (from_config_dir, from_elsewhere) == (expected, expected)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///",
        "sqlite:////var/lib/syncd/ledger.db",
        "sqlite+pysqlite:////var/lib/syncd/ledger.db?timeout=5",
    ],
)
def test_in_memory_and_absolute_sqlite_stay_as_written(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str], url: str
) -> None:
    """In-memory databases and absolute paths are not touched."""
    path = write(with_url(global_yaml, url), alice=user_yaml)

    assert ledger_url(path, env) == url


def test_relative_path_keeps_driver_and_query(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str], tmp_path: Path
) -> None:
    """sqlite+pysqlite:///db/l.db?timeout=5 keeps its driver and query."""
    path = write(
        with_url(global_yaml, "sqlite+pysqlite:///db/l.db?timeout=5"), alice=user_yaml
    )

    assert ledger_url(path, env) == f"sqlite+pysqlite:///{tmp_path}/db/l.db?timeout=5"


@pytest.mark.parametrize(
    "url", ["sqlite:///ledger.db", "sqlite:///file:ledger.db?mode=rwc&uri=true"]
)
def test_config_directory_with_url_characters(
    global_yaml: str, user_yaml: str, env: dict[str, str], tmp_path: Path, url: str
) -> None:
    """In a directory named 'a?b%20c#d', SQLite opens that directory's ledger.db."""
    directory = tmp_path / "a?b%20c#d"
    (directory / "users.d").mkdir(parents=True)
    (directory / "users.d" / "alice.yaml").write_text(user_yaml)
    (directory / "syncd.yaml").write_text(with_url(global_yaml, url))

    engine = create_engine(ledger_url(directory / "syncd.yaml", env))
    with engine.connect() as connection:
        rows = connection.execute(text("PRAGMA database_list")).all()
    engine.dispose()

    assert [row[2] for row in rows if row[1] == "main"] == [
        f"{tmp_path.resolve()}/a?b%20c#d/ledger.db"
    ]


def test_shipped_state_directory_url_stays_absolute() -> None:
    """config/syncd.yaml's ${STATE_DIRECTORY:-/var/lib/syncd} is absolute either way."""
    env = {
        "SYNCD_TENANT_ID": "contoso.example",
        "SYNCD_GRAPH_CLIENT_ID": "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
        "SYNCD_GRAPH_CLIENT_SECRET": "graph-secret",
        "SYNCD_INLOOX_API_KEY": "inloox-key",
        "SYNCD_INLOOX_API_KEY_ALICE": "alice-key",
    }
    example = ROOT / "config" / "syncd.yaml"

    unset = load_config(example, env=env).ledger.url
    systemd = load_config(example, env={**env, "STATE_DIRECTORY": "/srv/syncd"})

    assert unset == "sqlite:////var/lib/syncd/ledger.db"
    assert systemd.ledger.url == "sqlite:////srv/syncd/ledger.db"


def test_model_without_a_config_file_keeps_a_relative_path() -> None:
    """LedgerConfig built in code (no config directory) leaves the path alone."""
    assert LedgerConfig(url="sqlite:///ledger.db").url == "sqlite:///ledger.db"


def test_relative_file_uri_is_relative_to_the_config_file(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str], tmp_path: Path
) -> None:
    """file:ledger.db?mode=rwc&uri=true names the file next to syncd.yaml."""
    url = "sqlite:///file:ledger.db?mode=rwc&uri=true"
    path = write(with_url(global_yaml, url), alice=user_yaml)

    assert ledger_url(path, env) == (
        f"sqlite:///file:{tmp_path.resolve()}/ledger.db?mode=rwc&uri=true"
    )


def test_uri_flag_on_a_plain_path_is_still_a_path(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str], tmp_path: Path
) -> None:
    """With ?uri=1 a name not starting with file: is a plain (relative) path."""
    path = write(with_url(global_yaml, "sqlite:///ledger.db?uri=1"), alice=user_yaml)

    assert ledger_url(path, env) == f"sqlite:///{tmp_path.resolve()}/ledger.db?uri=1"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///file:/var/lib/syncd/ledger.db?uri=true",
        "sqlite:///file:///var/lib/syncd/ledger.db?uri=true",
        "sqlite:///file://localhost/var/lib/syncd/ledger.db?uri=true",
        "sqlite:///file::memory:?uri=true",
        "sqlite:///file:shared?mode=memory&cache=shared&uri=true",
    ],
)
def test_absolute_and_in_memory_file_uris_stay_as_written(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str], url: str
) -> None:
    """Absolute file: URIs and in-memory ones are not touched."""
    path = write(with_url(global_yaml, url), alice=user_yaml)

    assert ledger_url(path, env) == url


# --- URLs that cannot work ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "sqlite://tmp/x.db",
            "a SQLite URL has no host ('tmp'): write sqlite:////tmp/x.db for "
            "/tmp/x.db, or sqlite:///tmp/x.db for tmp/x.db relative to this file",
        ),
        (
            "sqlite://me:pw@localhost/x.db",
            f"a SQLite URL has no host, user or port: {SQLITE_FORMS}",
        ),
        (
            "sqlite+aiosqlite:///ledger.db",
            f"SQLite driver 'aiosqlite' is not installed: {SQLITE_FORMS}",
        ),
        (
            "postgresql+psycopg2://syncd:pw@db/syncd",
            "PostgreSQL driver 'psycopg2' is not installed (syncd ships psycopg 3): "
            + PSYCOPG,
        ),
        (
            "postgres+psycopg://syncd:pw@db/syncd",
            "SQLAlchemy does not know postgres://: " + PSYCOPG,
        ),
        (
            "postgres://syncd:pw@db/syncd",
            "SQLAlchemy does not know postgres://: " + PSYCOPG,
        ),
        (
            "mysql://syncd:pw@db/syncd",
            "unsupported database 'mysql': the ledger runs on SQLite or PostgreSQL; "
            "write sqlite:///ledger.db (relative to this file), "
            "sqlite:////var/lib/syncd/ledger.db or postgresql+psycopg://user@host/syncd",
        ),
        (
            "sqlite:///file:ledger.db",
            "a file: name is a SQLite URI only with ?uri=true: add it, or "
            f"{SQLITE_FORMS}",
        ),
        (
            "sqlite:///file://server/share/ledger.db?uri=true",
            "a file: URI has no host ('server'): write file:/ABSOLUTE/PATH or "
            "file:PATH (relative to this file)",
        ),
        (
            "ledger.db",
            "must be a SQLAlchemy URL like sqlite:///ledger.db (relative to this "
            "file), sqlite:////var/lib/syncd/ledger.db or "
            "postgresql+psycopg://user@host/syncd",
        ),
        (
            "postgresql+psycopg://syncd:p@ss:w/rd@db:5432/syncd",
            "the port after the host must be a number, like host:5432; write "
            "@ : / ? in a user name or password %-escaped (%40 %3A %2F %3F)",
        ),
    ],
)
def test_bad_ledger_url_says_what_to_write(
    write: Write,
    global_yaml: str,
    user_yaml: str,
    env: dict[str, str],
    url: str,
    message: str,
) -> None:
    """Each URL that would crash at run time is a problem of check-config."""
    path = write(with_url(global_yaml, url), alice=user_yaml)

    [problem] = ledger_problems(path, env)

    assert problem.message == message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://syncd:Hunter2Secret@db/syncd",
        "mysql://syncd:Hunter2Secret@db/syncd",
        "sqlite://syncd:Hunter2Secret@db/x.db",
        "postgresql+psycopg://syncd:Hunter2Secret@db:port/syncd",
        "Hunter2Secret",
    ],
)
def test_password_is_never_echoed(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str], url: str
) -> None:
    """No ledger.url problem repeats the password written in the URL."""
    path = write(with_url(global_yaml, url), alice=user_yaml)

    [problem] = ledger_problems(path, env)

    assert "Hunter2Secret" not in str(problem)


def test_password_from_the_environment_is_never_echoed(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """A ${VAR} password expanded into a bad URL stays out of the problem too."""
    url = "postgresql+psycopg2://syncd:${PG_PASSWORD}@db/syncd"
    path = write(with_url(global_yaml, url), alice=user_yaml)

    [problem] = ledger_problems(path, {**env, "PG_PASSWORD": "Hunter2Secret"})

    assert "Hunter2Secret" not in str(problem)


# --- PostgreSQL ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://syncd:pw@db:5432/syncd?sslmode=require",
            "postgresql+psycopg://syncd:pw@db:5432/syncd?sslmode=require",
        ),
        ("postgresql+psycopg://syncd@db/syncd", "postgresql+psycopg://syncd@db/syncd"),
        ("postgresql:///syncd", "postgresql+psycopg:///syncd"),
    ],
)
def test_postgresql_uses_psycopg_3(
    write: Write,
    global_yaml: str,
    user_yaml: str,
    env: dict[str, str],
    url: str,
    expected: str,
) -> None:
    """Plain postgresql:// is rewritten to postgresql+psycopg://, without problem."""
    path = write(with_url(global_yaml, url), alice=user_yaml)

    result = load_config_lenient(path, env=env)

    assert result.problems == ()
    assert result.config is not None
    assert result.config.ledger.url == expected


def test_checking_the_url_does_not_import_sqlalchemy(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """Loading a config (good and bad ledger URLs) leaves SQLAlchemy unimported."""
    good = write(with_url(global_yaml, "postgresql://db/syncd"), alice=user_yaml)
    code = (
        "import sys; from pathlib import Path; from syncd.config import "
        "load_config_lenient as load; env = dict(SECRET='s', API_KEY='k'); "
        f"load(Path({str(good)!r}), env=env); "
        "print('sqlalchemy' in sys.modules)"
    )

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )

    assert out.stdout.strip() == "False"
