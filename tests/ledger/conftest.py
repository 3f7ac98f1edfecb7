"""Fixtures for the ledger suite: one contract, run on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from syncd.ledger import Ledger
from tests.ledger.helpers import FakeClock
from tests.pg import postgres_db, postgres_server  # noqa: F401

TABLES = "events, cursors, users, passes, leases, owners"


def empty_tables(url: str) -> None:
    """Remove every row the previous test of the module left behind."""
    libpq = make_url(url).set(drivername="postgresql")
    dsn = libpq.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"TRUNCATE {TABLES}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pg_url(postgres_db: str) -> str:  # noqa: F811
    """The module's PostgreSQL database, migrated and emptied for this test."""
    Ledger.open(postgres_db).close()
    empty_tables(postgres_db)
    return postgres_db


@pytest.fixture(
    params=[
        "sqlite",
        "sqlite-uri",
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ]
)
def ledger_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """A migrated, empty ledger database of each kind (SQLite also URI-form)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/ledger.db"
    if request.param == "sqlite-uri":
        return f"sqlite:///file:{tmp_path}/state/ledger.db?uri=true"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def ledger(ledger_url: str, clock: FakeClock) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_url, clock=clock)
    yield opened
    opened.close()
