"""One daemon per SQLite ledger: the lock file beside the database."""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
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


CRASHER = """
import os, sys
from syncd.ledger import Ledger
Ledger.open(sys.argv[1]).acquire_process_lock()
os._exit(0)
"""


def _child(code: str, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _refused_beside(first_url: str, second_url: str) -> str:
    """The error the second spelling gets while the first holds the lock."""
    first, second = Ledger.open(first_url), Ledger.open(second_url)
    first.acquire_process_lock()
    try:
        with pytest.raises(LedgerError) as raised:
            second.acquire_process_lock()
    finally:
        first.close()
        second.close()
    return str(raised.value)


def _my_row() -> str:
    stat = Path("/proc/self/stat").read_text()
    start = stat.rsplit(")", 1)[1].split()[19]
    return f"process {socket.gethostname()} {os.getpid()} {start}"


def _add_owner(database: Path, owner: str) -> None:
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT INTO owners (owner, heartbeat_at) VALUES (?, ?)",
            (owner, "2025-01-15 09:00:00"),
        )


def _lock_is_free(path: Path) -> bool:
    with path.open() as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


def _owners(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT owner FROM owners").fetchall()
    return [row[0] for row in rows]


def test_symlink_to_the_file_shares_the_lock(tmp_path: Path) -> None:
    """A symlink to the ledger file is the same ledger: one lock, at the file."""
    Ledger.open(f"sqlite:///{tmp_path}/ledger.db").close()
    (tmp_path / "alias.db").symlink_to(tmp_path / "ledger.db")

    message = _refused_beside(
        f"sqlite:///{tmp_path}/ledger.db", f"sqlite:///{tmp_path}/alias.db"
    )

    assert message.endswith(f"lock file {tmp_path}/ledger.db.lock")
    assert not (tmp_path / "alias.db.lock").exists()


def test_symlinked_directory_shares_the_lock(tmp_path: Path) -> None:
    """Reaching the file through a symlinked directory takes the same lock."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    Ledger.open(f"sqlite:///{tmp_path}/real/ledger.db").close()

    message = _refused_beside(
        f"sqlite:///{tmp_path}/link/ledger.db", f"sqlite:///{tmp_path}/real/ledger.db"
    )

    assert message.endswith(f"lock file {tmp_path}/real/ledger.db.lock")


def test_uri_form_url_shares_the_lock(tmp_path: Path) -> None:
    """``file:`` URI-form URLs are locked, with the lock of the plain path."""
    uri = f"sqlite:///file:{tmp_path}/state/ledger.db?uri=true"

    message = _refused_beside(uri, f"sqlite:///{tmp_path}/state/ledger.db")

    assert message == (
        f"another syncd is already running on this ledger (pid {os.getpid()}); "
        f"lock file {tmp_path}/state/ledger.db.lock"
    )


def test_relative_path_shares_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative URL and the absolute one of the same file share one lock."""
    monkeypatch.chdir(tmp_path)

    message = _refused_beside("sqlite:///ledger.db", f"sqlite:///{tmp_path}/ledger.db")

    assert message.endswith(f"lock file {tmp_path}/ledger.db.lock")


def test_uri_holder_in_another_process_keeps_a_symlink_out(tmp_path: Path) -> None:
    """The reported double booking: `once` via a URI URL, another via a symlink."""
    Ledger.open(f"sqlite:///{tmp_path}/ledger.db").close()
    (tmp_path / "alias.db").symlink_to(tmp_path / "ledger.db")
    holder = _child(HOLDER, f"sqlite:///file:{tmp_path}/ledger.db?uri=true")
    try:
        assert holder.stdout is not None
        assert "locked\n" in iter(holder.stdout.readline, "")
        ledger = Ledger.open(f"sqlite:///{tmp_path}/alias.db")

        with pytest.raises(LedgerError, match=f"pid {holder.pid}"):
            ledger.acquire_process_lock()
        ledger.close()
    finally:
        holder.communicate("", timeout=10)


def test_deleted_lock_file_is_caught_by_the_owner_row(tmp_path: Path) -> None:
    """A lock file deleted under a running daemon: its owners row still refuses."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    holder = _child(HOLDER, url)
    try:
        assert holder.stdout is not None
        assert "locked\n" in iter(holder.stdout.readline, "")
        (tmp_path / "ledger.db.lock").unlink()
        ledger = Ledger.open(url)

        with pytest.raises(LedgerError) as raised:
            ledger.acquire_process_lock()

        assert str(raised.value).startswith(
            "another syncd is already running on this ledger "
            f"(pid {holder.pid} on {socket.gethostname()})"
        )
        ledger.close()
    finally:
        holder.communicate("", timeout=10)
    assert _lock_is_free(tmp_path / "ledger.db.lock")


def test_crashed_holders_row_is_replaced(tmp_path: Path) -> None:
    """A row left by a process that died does not keep the next one out."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    crasher = _child(CRASHER, url)
    crasher.communicate("", timeout=30)
    left = _owners(tmp_path / "ledger.db")
    assert [row.split(" ")[:3] for row in left] == [
        ["process", socket.gethostname(), str(crasher.pid)]
    ]
    ledger = Ledger.open(url)

    ledger.acquire_process_lock()

    assert _owners(tmp_path / "ledger.db") == [_my_row()]
    ledger.close()


@pytest.mark.parametrize(
    "row",
    [
        "process elsewhere.example {pid} -",
        "process {host} {pid} 1",
        "process garbled",
    ],
    ids=["other-host", "pid-reused", "garbled"],
)
def test_rows_of_no_live_process_here_are_replaced(tmp_path: Path, row: str) -> None:
    """Rows of other hosts, of a pid now used by a later process, or garbled."""
    ledger = Ledger.open(f"sqlite:///{tmp_path}/ledger.db")
    stale = row.format(host=socket.gethostname(), pid=os.getppid())
    _add_owner(tmp_path / "ledger.db", stale)

    ledger.acquire_process_lock()

    assert _owners(tmp_path / "ledger.db") == [_my_row()]
    ledger.close()


def test_live_row_of_this_host_without_start_time_refuses(tmp_path: Path) -> None:
    """Where start times are unknown, a live pid of this host is trusted."""
    ledger = Ledger.open(f"sqlite:///{tmp_path}/ledger.db")
    _add_owner(tmp_path / "ledger.db", f"process {socket.gethostname()} 1 -")

    with pytest.raises(LedgerError, match=r"\(pid 1 on "):
        ledger.acquire_process_lock()

    assert _lock_is_free(tmp_path / "ledger.db.lock")
    ledger.close()


def test_close_drops_the_owner_row(tmp_path: Path) -> None:
    """A clean stop leaves no owner row behind."""
    ledger = Ledger.open(f"sqlite:///{tmp_path}/ledger.db")
    ledger.acquire_process_lock()

    ledger.close()

    assert _owners(tmp_path / "ledger.db") == []


def test_in_memory_ledgers_need_no_lock() -> None:
    """Each in-memory ledger is its own database: acquiring is a no-op."""
    first, second = Ledger.open("sqlite://"), Ledger.open("sqlite://")

    first.acquire_process_lock()
    second.acquire_process_lock()

    first.close()
    second.close()
