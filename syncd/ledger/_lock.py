"""One daemon per SQLite ledger: an exclusive lock on ``<db file>.lock``."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import structlog

from syncd.errors import LedgerError

log = structlog.get_logger(__name__)


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
            raise LedgerError(
                f"another syncd is already running on this ledger (pid {holder}); "
                f"lock file {self.path}"
            ) from None

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


def _read_pid(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode(errors="replace").strip()
    return text or "unknown"
