"""One daemon per SQLite ledger: the lock file beside the database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.errors import LedgerError
from syncd.ledger import Ledger

HOLDER = """
import sys
from syncd.ledger import Ledger
ledger = Ledger.open(sys.argv[1])
ledger.acquire_process_lock()
print("locked", flush=True)
sys.stdin.read()
"""


def test_second_ledger_on_the_same_file_is_refused(tmp_path: Path) -> None:
    """A second lock holder gets a LedgerError naming the running pid."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    first, second = Ledger.open(url), Ledger.open(url)
    first.acquire_process_lock()

    with pytest.raises(LedgerError) as raised:
        second.acquire_process_lock()

    assert str(raised.value).startswith(
        f"another syncd is already running on this ledger (pid {os.getpid()})"
    )
    assert (tmp_path / "ledger.db.lock").exists()
    first.close()
    second.close()


def test_lock_is_free_again_after_close(tmp_path: Path) -> None:
    """Closing the ledger releases the lock for the next daemon."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    first = Ledger.open(url)
    with first.process_lock():
        pass
    first.acquire_process_lock()
    first.close()

    second = Ledger.open(url)
    second.acquire_process_lock()
    second.close()


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    """A daemon in another process keeps this one out, and its pid is named."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout is not None
        assert "locked\n" in iter(holder.stdout.readline, "")
        ledger = Ledger.open(url)

        with pytest.raises(LedgerError, match=f"pid {holder.pid}"):
            ledger.acquire_process_lock()
        ledger.close()
    finally:
        holder.communicate("", timeout=10)


@pytest.mark.postgres
def test_process_lock_is_a_no_op_on_postgresql(pg_url: str) -> None:
    """Replicas share PostgreSQL by leases, so no process lock applies."""
    first, second = Ledger.open(pg_url), Ledger.open(pg_url)

    first.acquire_process_lock()
    second.acquire_process_lock()

    first.close()
    second.close()
