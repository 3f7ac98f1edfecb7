"""One daemon per SQLite ledger, enforced twice.

First an exclusive ``flock`` on ``<real database file>.lock``, shared by every
spelling of the path.  Then, in case a process still gets past it (the lock
file was deleted under a running daemon, say), the holder records itself in
the ``owners`` table as ``process HOST PID START``; a newcomer finding a row
of another process that is still alive on this host refuses to run.  Rows of
dead processes and of other hosts (SQLite is never shared between hosts, and
a container's host name changes when it is recreated) are replaced.
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import structlog
from sqlalchemy import Connection, delete, select

from syncd.errors import LedgerError
from syncd.ledger._schema import OWNERS
from syncd.ledger._sql import upsert

log = structlog.get_logger(__name__)

OWNER_PREFIX = "process "
"""``owners`` rows of SQLite lock holders: ``process HOST PID START``."""


def lock_path(database_file: str) -> Path:
    """The lock file of a database file, the same for every path to it."""
    return Path(f"{os.path.realpath(database_file)}.lock")


class Process(NamedTuple):
    """A process, told apart from a later one reusing its pid by its start."""

    host: str
    pid: int
    start: str

    @classmethod
    def current(cls) -> Process:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _start_time(pid))

    @classmethod
    def parse(cls, owner: str) -> Process | None:
        parts = owner.removeprefix(OWNER_PREFIX).split(" ")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2])

    def owner(self) -> str:
        return f"{OWNER_PREFIX}{self.host} {self.pid} {self.start}"

    def alive_beside(self, me: Process) -> bool:
        """Whether this (other) process is running, as far as ``me`` can tell."""
        if self.host != me.host or self.pid == me.pid or not _exists(self.pid):
            return False
        started = _start_time(self.pid)
        return started == self.start or "-" in (started, self.start)


class ProcessLock:
    """An exclusive ``flock`` held for as long as this object is acquired."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise LedgerError naming the process holding it."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise _running(holder, self.path) from None

        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        log.debug("ledger_process_lock_acquired", path=str(self.path))

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def claim_owner(connection: Connection, path: Path, now: datetime) -> None:
    """Record this process as the ledger's lock holder, unless another lives.

    Run it in a write (``BEGIN IMMEDIATE``) transaction, holding ``path``.
    """
    me = Process.current()
    rows = connection.execute(
        select(OWNERS.c.owner).where(OWNERS.c.owner.startswith(OWNER_PREFIX))
    ).scalars()
    for owner in list(rows):
        other = Process.parse(owner)
        if other is not None and other.alive_beside(me):
            raise LedgerError(
                f"another syncd is already running on this ledger (pid {other.pid}"
                f" on {other.host}); it holds the ledger's owners row although"
                f" lock file {path} was free"
            )
        connection.execute(delete(OWNERS).where(OWNERS.c.owner == owner))
        if other != me:
            log.warning("ledger_stale_lock_owner_replaced", owner=owner)

    connection.execute(
        upsert(connection, OWNERS).values(owner=me.owner(), heartbeat_at=now)
    )


def drop_owner(connection: Connection) -> None:
    owner = Process.current().owner()
    connection.execute(delete(OWNERS).where(OWNERS.c.owner == owner))


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot), ``-`` if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "-"
    return stat.rsplit(")", 1)[1].split()[19]


def _running(holder: str, path: Path) -> LedgerError:
    return LedgerError(
        f"another syncd is already running on this ledger (pid {holder}); "
        f"lock file {path}"
    )


def _read_pid(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode(errors="replace").strip()
    return text or "unknown"
