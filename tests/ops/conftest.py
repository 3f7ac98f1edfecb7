"""A real ``syncd`` process against the simulator, watched like systemd watches it.

:class:`Daemon` starts ``python -m syncd.cli ...`` with the simulator's
configuration, a fake ``$NOTIFY_SOCKET`` (an ``AF_UNIX`` datagram socket that
collects every sd_notify message) and ``$WATCHDOG_USEC``, and reads the JSON
log lines of its stderr as they come.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.sim import Simulator, load_scenario

ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0
"""Seconds any single expectation may take (a loaded CI machine is slow)."""

WATCHDOG_USEC = 1_000_000
PASS_INTERVAL = "1s"

Line = dict[str, Any]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """The simulator on its default scenario."""
    simulator = Simulator(load_scenario(None))
    simulator.start()
    yield simulator
    simulator.close()


@pytest.fixture
def config(sim: Simulator, tmp_path: Path) -> Path:
    """syncd.yaml for the simulator: passes every second, metrics on a free port."""
    path = sim.write_config(tmp_path)
    edit_config(
        path,
        schedule={"interval": PASS_INTERVAL, "jitter": "0s"},
        metrics={"listen": "127.0.0.1:0"},
    )
    return path


def edit_config(path: Path, **sections: Any) -> None:
    """Replace top-level sections of a syncd.yaml."""
    data = yaml.safe_load(path.read_text())
    data.update(sections)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def process_env(sim: Simulator, config: Path, **extra: str) -> dict[str, str]:
    """The environment of a syncd process: ours minus systemd's, plus the sim's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
            "LISTEN_FDS",
            "CREDENTIALS_DIRECTORY",
        )
    }
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    env.update(sim.config_env(config.parent))
    env.update(extra)
    return env


def syncd(*args: str) -> list[str]:
    """The command line of ``syncd ARGS`` with this interpreter."""
    return [sys.executable, "-m", "syncd.cli", *args]


class Daemon:
    """One ``syncd run`` process, its sd_notify messages and its log lines."""

    def __init__(self, sim: Simulator, config: Path, *args: str) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="sd-"))  # short: sun_path <= 108
        self.notify_path = self._dir / "notify"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self.notify_path))
        self._socket.settimeout(0.1)
        self.messages: list[str] = []
        self.lines: list[Line] = []
        self.raw_lines: list[str] = []
        self._lock = threading.Lock()
        env = process_env(
            sim,
            config,
            NOTIFY_SOCKET=str(self.notify_path),
            WATCHDOG_USEC=str(WATCHDOG_USEC),
        )
        self.process = subprocess.Popen(
            syncd("run", "-c", str(config), *args),
            env=env,
            cwd=config.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._threads = [
            threading.Thread(target=self._read_notify, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # ---- readers ---------------------------------------------------------------

    def _read_notify(self) -> None:
        while True:
            try:
                data = self._socket.recv(65536)
            except TimeoutError:
                if self.process.poll() is not None:
                    return
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(data.decode())

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._lock:
                self.raw_lines.append(raw)
                with contextlib.suppress(ValueError):
                    self.lines.append(json.loads(raw))

    # ---- expectations ------------------------------------------------------------

    def notified(self, field: str) -> list[str]:
        """Every ``KEY=value`` line sent so far whose key is ``field``."""
        with self._lock:
            sent = [line for m in self.messages for line in m.split("\n")]
        return [line for line in sent if line.partition("=")[0] == field]

    def wait_notify(self, line: str) -> None:
        """Wait until a datagram carried exactly ``line`` (e.g. ``READY=1``)."""
        key = line.partition("=")[0]
        self.wait_until(lambda: line in self.notified(key), f"sd_notify {line}")

    def logged(self, event: str, **fields: Any) -> list[Line]:
        """Log lines of ``event`` whose fields include ``fields``."""
        with self._lock:
            lines = list(self.lines)
        return [
            line
            for line in lines
            if line.get("event") == event
            and all(line.get(k) == v for k, v in fields.items())
        ]

    def wait_log(self, event: str, count: int = 1, **fields: Any) -> Line:
        """Wait for the ``count``-th line of ``event``; return the last one."""
        self.wait_until(
            lambda: len(self.logged(event, **fields)) >= count,
            f"{count} log line(s) {event} {fields}",
        )
        return self.logged(event, **fields)[-1]

    def health_url(self, path: str) -> str:
        """The URL of ``path`` on the bound metrics port (from the log)."""
        listen = self.wait_log("health_server_started")["listen"]
        return f"http://{listen}{path}"

    def wait_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not done():
            if self.process.poll() is not None and not done():
                time.sleep(0.2)  # let the readers drain
                if done():
                    return
                raise AssertionError(
                    f"syncd exited {self.process.returncode} "
                    f"before {what}:\n{self.stderr()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {WAIT}s:\n{self.stderr()}")
            time.sleep(0.05)

    # ---- control ---------------------------------------------------------------

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed after ``WAIT`` seconds)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for thread in self._threads:
            thread.join(5)
        return code

    def stderr(self) -> str:
        with self._lock:
            return "".join(self.raw_lines)

    def close(self) -> None:
        self.stop()
        self._socket.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def start_daemon(sim: Simulator) -> Iterator[Callable[..., Daemon]]:
    """Start ``syncd run -c CONFIG ARGS``; every daemon is stopped afterwards."""
    daemons: list[Daemon] = []

    def start(config: Path, *args: str) -> Daemon:
        daemon = Daemon(sim, config, *args)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.close()
