"""A PostgreSQL server for tests: ``SYNCD_TEST_POSTGRES_URL``, or a private one.

Without the variable, a throwaway cluster is started with the binaries of the
newest /usr/lib/postgresql/<version>/bin (else ``initdb`` on PATH) in a
temporary directory (127.0.0.1, a free port, trust auth) and removed at exit.
``initdb`` refuses to run as root, so as root the cluster runs as the
``postgres`` system user.  When no server can be had, tests are skipped, or
fail when ``CI`` is set (CI must exercise PostgreSQL).

Use the fixtures by importing them into a conftest or test module::

    from tests.pg import postgres_db, postgres_server  # noqa: F401
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url

ENV_URL = "SYNCD_TEST_POSTGRES_URL"
BINARY_ROOT = Path("/usr/lib/postgresql")  # Debian: one <major>/bin per version
SYSTEM_USER = "postgres"


class Unavailable(Exception):
    """No PostgreSQL server could be found or started."""


class Cluster:
    """A private PostgreSQL cluster in a temporary directory."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="syncd-pg-"))
        self.port = _free_port()
        self.as_user = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        if self.as_user is not None:
            shutil.chown(self.root, user=self.as_user)
        data = self.root / "data"
        self._run(
            "initdb",
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        with contextlib.suppress(Unavailable):
            self._run(
                "pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.as_user is not None:
            command = ["runuser", "-u", self.as_user, "--", *command]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.root,
            check=False,
        )
        if done.returncode != 0:
            raise Unavailable(f"{tool} failed: {done.stderr.strip()[-500:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bindir() -> Path:
    for candidate in _debian_bindirs():
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise Unavailable(f"no initdb found (install postgresql) and {ENV_URL} is not set")


def _debian_bindirs() -> list[Path]:
    """Debian's PostgreSQL binary directories, newest major version first."""
    return sorted(BINARY_ROOT.glob("*/bin"), key=_major, reverse=True)


def _major(bindir: Path) -> tuple[int, ...]:
    """The version of ``/usr/lib/postgresql/<version>/bin`` as numbers (9.6 < 17)."""
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))


_server_url: str | None = None
_failure: str | None = None


def postgres_url() -> str:
    """The server's URL (database ``postgres``); skips or fails if none."""
    global _server_url, _failure
    if _server_url is None and _failure is None:
        try:
            _server_url = os.environ.get(ENV_URL) or _start_cluster()
        except Unavailable as exc:
            _failure = str(exc)
    if _server_url is not None:
        return _server_url
    message = f"PostgreSQL unavailable: {_failure}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _start_cluster() -> str:
    cluster = Cluster(_bindir())
    atexit.register(cluster.stop)
    cluster.start()
    return cluster.url


def fresh_database(name: str) -> str:
    """Create an empty database named after ``name``; return its URL."""
    server = make_url(postgres_url())
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    database = "t_" + re.sub(r"[^a-z0-9_]", "_", f"{name}_{worker}".lower())[-50:]
    with psycopg.connect(_libpq(server), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{database}"')
    return server.set(database=database).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    target = make_url(url)
    server = target.set(database=make_url(postgres_url()).database)
    with psycopg.connect(_libpq(server), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')


def _libpq(url: URL) -> str:
    """The URL as libpq (psycopg) spells it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of a running PostgreSQL server (skip or fail without one)."""
    return postgres_url()


@pytest.fixture(scope="module")
def postgres_db(request: pytest.FixtureRequest, postgres_server: str) -> Iterator[str]:
    """A fresh, empty database for the requesting test module."""
    url = fresh_database(request.module.__name__)
    yield url
    drop_database(url)
