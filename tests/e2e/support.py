"""Running syncd as a subprocess: one-shot commands and long-running processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT = 60.0
"""Seconds any single CLI subprocess may take before the test fails."""

INHERITED_SYNCD_VARS = ("SYNCD_CONFIG", "JOURNAL_STREAM", "NOTIFY_SOCKET",
                        "WATCHDOG_USEC", "WATCHDOG_PID")
"""Variables of the test's own environment a syncd subprocess must not see."""


@dataclass(frozen=True)
class CliResult:
    """How one ``syncd`` command ended."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return (f"syncd {' '.join(self.args)} -> {self.code}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")


@dataclass(frozen=True)
class SimConfig:
    """A configuration written for a running simulator."""

    path: Path
    """syncd.yaml"""
    env: dict[str, str]
    """What a syncd process needs on top of a clean environment."""
    ledger_path: Path

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.ledger_path}"

    def edit(self, changes: dict[str, Any]) -> None:
        """Merge ``changes`` into syncd.yaml (nested mappings merge, rest replaces)."""
        data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        _merge(data, changes)
        self.path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                             encoding="utf-8")


def write_sim_config(sim: Any, directory: Path) -> SimConfig:
    """The simulator's ready configuration in ``directory``/config, ledger beside."""
    ledger_path = directory / "ledger.db"
    path = sim.write_config(directory / "config", ledger_url=f"sqlite:///{ledger_path}")
    return SimConfig(path=path, env=sim.config_env(directory / "config"),
                     ledger_path=ledger_path)


def _merge(data: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            _merge(data[key], value)
        else:
            data[key] = value


def run_passes(config: Any, ledger: Any,
               users: Sequence[str] | None = None) -> dict[str, Any]:
    """One pass per user (default: all) in-process with a fresh Runner, like `once`."""
    from syncd.runner import Runner

    mailboxes = [u.mailbox for u in config.users] if users is None else users

    async def passes() -> dict[str, Any]:
        runner = Runner(config, ledger)
        try:
            return {user: await runner.run_pass(user) for user in mailboxes}
        finally:
            await runner.aclose()

    return asyncio.run(passes())


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment for a syncd subprocess, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_SYNCD_VARS}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


def run_syncd(*args: str, env: dict[str, str] | None = None,
              timeout: float = CLI_TIMEOUT,
              python_flags: tuple[str, ...] = ()) -> CliResult:
    """Run ``python -m syncd.cli ARGS`` to completion."""
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, *python_flags, "-m", "syncd.cli", *args],
        env=cli_env(env), cwd=REPO, capture_output=True, text=True,
        encoding="utf-8", errors="replace", timeout=timeout, check=False,
    )
    return CliResult(tuple(args), completed.returncode, completed.stdout,
                     completed.stderr, time.monotonic() - started)


def start_syncd(*args: str, env: dict[str, str] | None = None) -> Process:
    """Start ``python -m syncd.cli ARGS`` and return at once (stop it yourself)."""
    popen = subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", *args], env=cli_env(env), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        encoding="utf-8", errors="replace",
    )
    return Process(tuple(args), popen)


@dataclass
class Process:
    """A syncd subprocess that keeps running; its output is collected as it comes."""

    args: tuple[str, ...]
    popen: subprocess.Popen[str]
    _stdout: list[str] = field(default_factory=list)
    _stderr: list[str] = field(default_factory=list)
    _readers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        for stream, lines in ((self.popen.stdout, self._stdout),
                              (self.popen.stderr, self._stderr)):
            reader = threading.Thread(target=_collect, args=(stream, lines),
                                      daemon=True)
            reader.start()
            self._readers.append(reader)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def wait_for(self, condition: Callable[[], bool], timeout: float,
                 what: str) -> None:
        """Poll ``condition`` until true; fail naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.popen.poll() is not None:
                self._join()
                pytest.fail(f"{what}: syncd exited {self.popen.returncode}\n{self}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:g}s\n{self}")
            time.sleep(0.1)

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        self.wait_for(lambda: text in self.output, timeout, f"output {text!r}")

    def stop(self, sig: signal.Signals = signal.SIGTERM,
             timeout: float = 10.0) -> int | None:
        """Send ``sig`` and wait; the exit code, or None if it did not exit."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._join()
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._join()

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(5)

    def __str__(self) -> str:
        return (f"syncd {' '.join(self.args)} (pid {self.pid})\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")


def _collect(stream: Any, lines: list[str]) -> None:
    for line in iter(stream.readline, ""):
        lines.append(line)
    stream.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.1 s; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g}s")
        time.sleep(0.1)


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a syncd output (other lines are left out)."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def event_names(text: str) -> list[str]:
    return [str(e.get("event")) for e in log_events(text)]
