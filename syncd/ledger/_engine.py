"""Engines for SQLite and PostgreSQL, and the one place DB errors become words."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import asbool

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
URL_FORMS = "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
SQLITE_FORMS = "use sqlite:///relative/path.db or sqlite:////absolute/path.db"


def sqlite_path(url: URL) -> Path | None:
    """The database file a SQLite URL names, as written, or None (in memory).

    A ``file:`` name is a SQLite URI only with ``?uri=true``; without it the
    driver would take it as a plain file name, which this refuses to guess.
    """
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:":
        return None
    if not database.startswith("file:"):
        return Path(database)
    if not asbool(url.query.get("uri", False)):
        return None
    return _uri_path(database, url.query.get("mode"))


def ledger_file(url_text: str) -> Path | None:
    """The SQLite file a ledger URL names (``file:`` URIs too), None if none."""
    return sqlite_path(_parse(url_text))


def _uri_path(database: str, mode: object) -> Path | None:
    path = unquote(urlsplit(database).path)
    if mode == "memory" or path in ("", ":memory:"):
        return None
    return Path(path)


def database_file(engine: Engine) -> str | None:
    """The file SQLite really opened, symlinks resolved; None in memory.

    Asked of SQLite itself, so every spelling of a URL (relative, URI form,
    percent-encoded, through a symlink) names the same file.
    """
    if engine.dialect.name != "sqlite":
        return None
    with wrapped("open"), engine.connect() as connection:
        rows = connection.execute(text("PRAGMA database_list")).all()
    file = next((row[2] for row in rows if row[1] == "main"), "")
    return os.path.realpath(file) if file else None


def create(url_text: str) -> Engine:
    """An engine for ``url_text`` set up the way the ledger needs it.

    A URL that is malformed, names an unknown dialect or a driver that is
    not installed is a :class:`LedgerError` that never shows the password.
    """
    url = _parse(url_text)
    shown = url.render_as_string(hide_password=True)
    try:
        return _create(url)
    except NoSuchModuleError:
        raise LedgerError(
            f"unknown database {url.drivername!r} in ledger URL {shown}; {URL_FORMS}"
        ) from None
    except ArgumentError:
        forms = SQLITE_FORMS if url.get_backend_name() == "sqlite" else URL_FORMS
        raise LedgerError(f"invalid ledger URL {shown}; {forms}") from None
    except ImportError as exc:
        raise LedgerError(
            f"the driver for {url.drivername!r} is not installed "
            f"({exc.name or exc}); {URL_FORMS}"
        ) from None
    except OSError as exc:
        raise LedgerError(
            f"cannot create the ledger directory: {exc.strerror} ({exc.filename})"
        ) from None


def _parse(url_text: str) -> URL:
    try:
        return make_url(url_text)
    except ArgumentError:
        raise LedgerError(f"ledger URL is not a database URL; {URL_FORMS}") from None


def _create(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    if url.get_backend_name() == "postgresql":
        return _postgres_engine(url)
    raise LedgerError(
        f"unsupported ledger database {url.get_backend_name()!r}; {URL_FORMS}"
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
