"""sd_notify: tell systemd (``Type=notify``) how the service is doing.

A few lines over ``$NOTIFY_SOCKET`` (an ``AF_UNIX`` datagram socket; a leading
``@`` means the abstract namespace).  Without the variable every call is a
no-op, so the same code runs under systemd, in a container and in a terminal.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Send sd_notify state lines; silent when not started by systemd."""

    def __init__(
        self, address: str | None, *, watchdog_usec: int | None = None
    ) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._socket: socket.socket | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=_watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half the systemd timeout), if any."""
        if not self.enabled or not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def send(self, *lines: str) -> None:
        """Send ``KEY=value`` lines in one datagram; errors are logged, not raised."""
        if self.address is None or not lines:
            return

        message = "\n".join(lines).encode()
        try:
            self._connected().sendto(message, _socket_address(self.address))
        except OSError as error:
            log.debug("sd_notify_failed", error=str(error))

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *_status(status))

    def status(self, status: str) -> None:
        self.send(*_status(status))

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> None:
        self.send("STOPPING=1", *_status(status))

    def reloading(self) -> None:
        """RELOADING=1 with the monotonic timestamp systemd 253+ expects."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _connected(self) -> socket.socket:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)
        return self._socket


def _status(status: str | None) -> tuple[str, ...]:
    if status is None:
        return ()
    return (f"STATUS={' '.join(status.splitlines())}",)


def _socket_address(address: str) -> str:
    """``@name`` is Linux's abstract namespace: a leading NUL byte."""
    if address.startswith("@"):
        return "\0" + address[1:]
    return address


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """The watchdog timeout, when it is meant for this very process."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None
