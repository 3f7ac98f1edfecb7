"""sd_notify: datagrams to $NOTIFY_SOCKET, silence without it."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.notify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(1.0)
    yield path, sock
    sock.close()


def test_ready_with_status_is_one_datagram(
    notify_socket: tuple[str, socket.socket],
) -> None:
    """READY=1 and STATUS= travel together in one datagram."""
    path, sock = notify_socket
    notifier = Notifier(path)

    notifier.ready("3 users")

    assert sock.recv(4096) == b"READY=1\nSTATUS=3 users"


def test_reloading_carries_monotonic_time(
    notify_socket: tuple[str, socket.socket],
) -> None:
    """RELOADING=1 is sent with MONOTONIC_USEC, as systemd requires."""
    path, sock = notify_socket
    Notifier(path).reloading()

    reloading, monotonic = sock.recv(4096).decode().split("\n")

    assert reloading == "RELOADING=1"
    assert monotonic.startswith("MONOTONIC_USEC=")
    assert int(monotonic.split("=")[1]) > 0


def test_status_is_kept_on_one_line(notify_socket: tuple[str, socket.socket]) -> None:
    """A multi-line status cannot inject other state lines."""
    path, sock = notify_socket
    Notifier(path).status("bad\nREADY=1")

    assert sock.recv(4096) == b"STATUS=bad READY=1"


def test_abstract_namespace_address() -> None:
    """An address starting with @ reaches an abstract-namespace socket."""
    name = f"syncd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(1.0)
    try:
        Notifier(f"@{name}").stopping()
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        sock.close()


def test_nothing_happens_without_notify_socket() -> None:
    """Without NOTIFY_SOCKET the notifier is disabled and sends nothing."""
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})

    notifier.ready("x")

    assert not notifier.enabled
    assert notifier.watchdog_interval is None


def test_watchdog_interval_is_half_the_timeout() -> None:
    """WATCHDOG_USEC=2s means a ping every second."""
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "2000000"}
    notifier = Notifier.from_env(env)

    assert notifier.watchdog_interval == 1.0


def test_watchdog_for_another_pid_is_ignored() -> None:
    """WATCHDOG_PID naming another process disables the watchdog here."""
    env = {
        "NOTIFY_SOCKET": "/run/x",
        "WATCHDOG_USEC": "2000000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }

    assert Notifier.from_env(env).watchdog_interval is None


def test_missing_socket_does_not_raise(tmp_path: Path) -> None:
    """A vanished socket is logged, never raised into the service."""
    Notifier(str(tmp_path / "gone")).ready()
