"""Check ``ledger.url`` the way SQLAlchemy will read it, without importing it.

Only what syncd ships can work: SQLite (``sqlite://``, ``sqlite+pysqlite://``)
and PostgreSQL through psycopg 3 (``postgresql+psycopg://``).  Plain
``postgresql://`` would make SQLAlchemy pick psycopg2, so it is rewritten.  A
relative SQLite path, plain or in a ``file:`` URI (``?uri=true``), is made
absolute against the directory of syncd.yaml, so every run uses the same ledger
whatever its working directory.

Messages never repeat the URL's user name or password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote

# The grammar of sqlalchemy.engine.url.make_url, group for group.
_URL = re.compile(
    r"""
    (?P<name>[\w+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/?]+)\]|(?P<ipv4host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?
    (?:/(?P<database>[^?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.VERBOSE | re.DOTALL,
)
_SQLITE_DRIVERS = ("", "pysqlite")
_POSTGRES = "postgresql+psycopg"
_IN_MEMORY = ("", ":memory:")
_TRUE = ("true", "yes", "on", "y", "t", "1")  # sqlalchemy.util.asbool
_EXAMPLES = (
    "sqlite:///ledger.db (relative to this file), sqlite:////var/lib/syncd/ledger.db "
    "or postgresql+psycopg://user@host/syncd"
)


@dataclass(frozen=True)
class _Parts:
    """The pieces of a URL that the checks look at."""

    backend: str
    driver: str
    userinfo: bool
    host: str
    port: str
    database: str | None
    query: str | None


def check_ledger_url(value: str, base_dir: Path | None) -> str:
    """The URL syncd will open; ValueError says what to write instead."""
    parts = _parse(value)
    if parts.backend == "sqlite":
        return _sqlite(parts, base_dir)
    if parts.backend == "postgresql":
        return _postgresql(value, parts)
    if parts.backend == "postgres":
        raise ValueError(
            "SQLAlchemy does not know postgres://: write postgresql+psycopg://"
            "user@host/syncd"
        )
    raise ValueError(
        f"unsupported database {parts.backend!r}: the ledger runs on SQLite or "
        f"PostgreSQL; write {_EXAMPLES}"
    )


def _parse(value: str) -> _Parts:
    """Split the URL like SQLAlchemy does; anything else is refused."""
    match = _URL.fullmatch(value)
    if match is None:
        raise ValueError(f"must be a SQLAlchemy URL like {_EXAMPLES}")
    backend, _, driver = match["name"].partition("+")
    return _Parts(
        backend=backend,
        driver=driver,
        userinfo=match["username"] is not None,
        host=match["ipv4host"] or match["ipv6host"] or "",
        port=match["port"] or "",
        database=match["database"],
        query=match["query"],
    )


# --- SQLite ----------------------------------------------------------------------


def _sqlite(parts: _Parts, base_dir: Path | None) -> str:
    """Refuse what pysqlite cannot open; make a relative path absolute."""
    if parts.driver not in _SQLITE_DRIVERS:
        raise ValueError(
            f"SQLite driver {parts.driver!r} is not installed: write "
            "sqlite:///PATH (relative to this file) or sqlite:////ABSOLUTE/PATH"
        )
    if parts.userinfo or parts.host or parts.port:
        raise ValueError(_host_message(parts))
    database = parts.database
    if database is None or database in _IN_MEMORY:
        return _sqlite_url(parts, database)
    if database.startswith("file:"):
        return _sqlite_url(parts, _uri_database(parts, database, base_dir))
    return _sqlite_url(parts, _absolute(database, base_dir))


def _host_message(parts: _Parts) -> str:
    """Explain that a SQLite URL has no host, with both likely meanings."""
    if parts.userinfo or parts.port or not parts.host:
        return (
            "a SQLite URL has no host, user or port: write sqlite:///PATH "
            "(relative to this file) or sqlite:////ABSOLUTE/PATH"
        )
    path = "/".join(p for p in (parts.host, parts.database) if p)
    return (
        f"a SQLite URL has no host ({parts.host!r}): write sqlite:////{path} "
        f"for /{path}, or sqlite:///{path} for {path} relative to this file"
    )


def _uri_database(parts: _Parts, database: str, base_dir: Path | None) -> str:
    """A ``file:`` URI (``?uri=true``) with a relative path made absolute.

    ``database`` is as written, escaped twice: once for SQLAlchemy's URL, once
    for SQLite's URI; the directory put in front is escaped the same way.
    """
    query = dict(parse_qsl(parts.query or "", keep_blank_values=True))
    if query.get("uri", "").lower() not in _TRUE:
        raise ValueError(
            "a file: name is a SQLite URI only with ?uri=true: add it, or "
            "write sqlite:///PATH (relative to this file) or sqlite:////ABSOLUTE/PATH"
        )
    path = database.removeprefix("file:")
    if path.startswith("//"):
        host = path[2:].partition("/")[0]
        if host not in ("", "localhost"):
            raise ValueError(
                f"a file: URI has no host ({host!r}): write file:/ABSOLUTE/PATH "
                "or file:PATH (relative to this file)"
            )
        return database
    in_memory = path in _IN_MEMORY or query.get("mode") == "memory"
    if path.startswith("/") or in_memory or base_dir is None:
        return database
    directory = str(base_dir.resolve())
    escaped = directory.replace("%", "%25").replace("?", "%3F").replace("#", "%23")
    return f"file:{_quote(escaped)}/{path}"


def _absolute(database: str, base_dir: Path | None) -> str:
    """The database path made absolute against ``base_dir``, quoted for the URL."""
    try:
        path = Path(unquote(database)).expanduser()
    except RuntimeError as exc:
        raise ValueError(f"cannot expand ~ in the SQLite path: {exc}") from None
    if not path.is_absolute() and base_dir is not None:
        path = base_dir.resolve() / path
    return _quote(str(path))


def _sqlite_url(parts: _Parts, database: str | None) -> str:
    """Write a SQLite URL back, without host."""
    name = "sqlite" + (f"+{parts.driver}" if parts.driver else "")
    url = f"{name}://" if database is None else f"{name}:///{database}"
    return url if parts.query is None else f"{url}?{parts.query}"


def _quote(text: str) -> str:
    """Escape what SQLAlchemy would read as a %-escape or as the query's start."""
    return text.replace("%", "%25").replace("?", "%3F")


# --- PostgreSQL ---------------------------------------------------------------------


def _postgresql(value: str, parts: _Parts) -> str:
    """Require psycopg 3 (rewriting plain postgresql://) and a numeric port."""
    if parts.driver not in ("", "psycopg"):
        raise ValueError(
            f"PostgreSQL driver {parts.driver!r} is not installed (syncd ships "
            "psycopg 3): write postgresql+psycopg://user@host/syncd"
        )
    if parts.port and not parts.port.isdigit():
        raise ValueError(
            "the port after the host must be a number, like host:5432; write "
            "@ : / ? in a user name or password %-escaped (%40 %3A %2F %3F)"
        )
    return _POSTGRES + value.removeprefix("postgresql").removeprefix("+psycopg")
