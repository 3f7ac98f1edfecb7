"""Schema versions, database set-up and error wrapping, on both databases."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from syncd.errors import LedgerError
from syncd.ledger import (
    Ledger,
    LedgerSchemaMissing,
    LedgerSchemaTooNew,
    State,
    head_revision,
)
from syncd.ledger._engine import create
from syncd.ledger._schema import Base
from tests.pg import drop_database, fresh_database

TABLES = {"alembic_version", "cursors", "events", "leases", "owners", "passes", "users"}


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/new/dir/ledger.db"
        return
    url = fresh_database(request.node.name)
    yield url
    drop_database(url)


def execute(url: str, statement: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_open_migrates_an_empty_database_to_head(empty_url: str) -> None:
    """Opening an empty database creates every table and records the revision."""
    Ledger.open(empty_url).close()

    engine = create_engine(empty_url)
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) == TABLES
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    assert revision == head_revision() == "0001"


def test_migrations_match_the_models(empty_url: str) -> None:
    """The migrated schema is exactly what the SQLAlchemy models describe."""
    Ledger.open(empty_url).close()

    engine = create_engine(empty_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_reopening_keeps_the_data(empty_url: str) -> None:
    """A second open finds the schema at head and the records still there."""
    first = Ledger.open(empty_url)
    first.record_skip(
        "u", "ev", "free", start=None, end=None, all_day=False, series_master_id=None
    )
    first.close()

    second = Ledger.open(empty_url)
    assert second.get("u", "ev").state is State.SKIPPED  # type: ignore[union-attr]
    second.close()


@pytest.mark.parametrize("migrate", [True, False])
def test_a_newer_schema_is_refused(empty_url: str, migrate: bool) -> None:
    """A ledger migrated by a newer syncd is refused with advice to upgrade."""
    Ledger.open(empty_url).close()
    execute(empty_url, "UPDATE alembic_version SET version_num = '9999_future'")

    with pytest.raises(LedgerSchemaTooNew, match="upgrade syncd") as raised:
        Ledger.open(empty_url, migrate=migrate)

    assert isinstance(raised.value, LedgerError)
    assert execute(empty_url, "SELECT version_num FROM alembic_version") == [
        ("9999_future",)
    ]


def test_open_without_migrate_leaves_an_empty_database_alone(empty_url: str) -> None:
    """migrate=False creates no schema; an empty ledger is reported as such."""
    with pytest.raises(LedgerSchemaMissing):
        Ledger.open(empty_url, migrate=False)

    engine = create_engine(empty_url)
    with engine.connect() as connection:
        assert inspect(connection).get_table_names() == []
    engine.dispose()


def test_sqlite_ledger_runs_in_wal_mode(tmp_path: Path) -> None:
    """The SQLite file is switched to write-ahead logging."""
    Ledger.open(f"sqlite:///{tmp_path}/ledger.db").close()

    with sqlite3.connect(tmp_path / "ledger.db") as connection:
        mode = connection.execute("PRAGMA journal_mode").fetchone()

    assert mode == ("wal",)


def test_sqlite_writer_waits_for_the_write_lock(tmp_path: Path) -> None:
    """A claim waits (busy timeout) while another writer holds the lock."""
    ledger = Ledger.open(f"sqlite:///{tmp_path}/ledger.db")
    other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    claimed: list[object] = []
    waiter = threading.Thread(
        target=lambda: claimed.append(
            ledger.claim(
                "u",
                "ev",
                project_id="p",
                task_id=None,
                start=None,
                end=None,
                all_day=False,
                series_master_id=None,
            )
        )
    )

    waiter.start()
    time.sleep(0.3)
    waiting = waiter.is_alive()
    records_while_locked = ledger.records("u")
    other.execute("COMMIT")
    waiter.join(timeout=10)

    assert waiting and records_while_locked == {}
    assert len(claimed) == 1 and claimed[0] is not None
    other.close()
    ledger.close()


def test_unreachable_postgresql_is_a_ledger_error() -> None:
    """Opening a PostgreSQL ledger nobody listens on raises LedgerError."""
    url = "postgresql+psycopg://syncd@127.0.0.1:1/ledger"

    with pytest.raises(LedgerError, match="ledger schema check failed"):
        Ledger.open(url)


def test_ping_of_an_unreachable_database_is_a_ledger_error() -> None:
    """ping() (behind /readyz) raises LedgerError when the server is gone."""
    ledger = Ledger(create("postgresql+psycopg://syncd@127.0.0.1:1/ledger"))

    with pytest.raises(LedgerError, match="ping failed"):
        ledger.ping()
    ledger.close()


def test_unsupported_database_is_a_ledger_error() -> None:
    """Only SQLite and PostgreSQL are supported, and the error says so."""
    with pytest.raises(LedgerError, match="postgresql"):
        Ledger.open("mysql://u@127.0.0.1/x")
