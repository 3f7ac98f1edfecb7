"""Engines for SQLite and PostgreSQL, and the one place DB errors become words."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from syncd.errors import LedgerError

BUSY_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 30_000
"""PostgreSQL: no statement may hang a pass (the ledger is called synchronously)."""
KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
"""PostgreSQL: notice a vanished server within about a minute, not hours."""
READ_ONLY = "syncd_read_only"
"""Execution option: begin a deferred SQLite transaction (no write lock)."""


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None (in-memory, other dialects)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def create(url_text: str) -> Engine:
    """An engine for ``url_text`` set up the way the ledger needs it."""
    url = make_url(url_text)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    if url.get_backend_name() == "postgresql":
        return _postgres_engine(url)
    raise LedgerError(
        f"unsupported ledger database {url.get_backend_name()!r}; "
        "use sqlite:///PATH or postgresql+psycopg://..."
    )


def _postgres_engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {
        k: v for k, v in KEEPALIVE.items() if k not in url.query
    }
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    if "options" not in url.query:
        connect_args["options"] = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _sqlite_engine(url: URL) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
    )
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(
    dbapi_connection: sqlite3.Connection, record: ConnectionPoolEntry
) -> None:
    # Leave transaction control to us: pysqlite's implicit BEGIN is deferred
    # and would only take the write lock at the first write, inviting
    # SQLITE_BUSY deadlocks between two writers that both read first.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    # Straight to the driver: through exec_driver_sql every transaction paid a
    # whole SQLAlchemy execution (events, result set-up) for one keyword.
    statement = (
        "BEGIN"
        if connection.get_execution_options().get(READ_ONLY)
        else "BEGIN IMMEDIATE"
    )
    connection.connection.driver_connection.execute(statement)  # type: ignore[union-attr]


@contextmanager
def wrapped(action: str) -> Iterator[None]:
    """Turn any database failure inside into a :class:`LedgerError`."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise LedgerError(f"ledger {action} failed: {describe(exc)}") from exc


def describe(exc: SQLAlchemyError) -> str:
    """The driver's own words, without the SQL statement or its parameters."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        text = str(exc.orig).strip().splitlines()
        first = text[0] if text else ""
        return f"{type(exc.orig).__name__}: {first}"
    return type(exc).__name__
