"""A bench for fault tests: the real runner and ledger against the simulator."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load_config
from syncd.ledger import Ledger
from syncd.model import PassResult
from syncd.runner import Runner
from syncd.sim import Simulator
from tests.crash.support import write_config


class Bench:
    """Passes of one long-lived :class:`Runner`, as ``syncd run`` makes them."""

    def __init__(
        self,
        sim: Simulator,
        directory: Path,
        monkeypatch: pytest.MonkeyPatch,
        *,
        ledger_url: str | None = None,
        **overrides: Any,
    ) -> None:
        self.sim = sim
        url = ledger_url or f"sqlite:///{directory}/ledger.db"
        defaults = {"retry.max_attempts": 2, "retry.base_delay": "10ms"}
        self.path = write_config(sim, directory, url, **{**defaults, **overrides})
        for name, value in sim.config_env(directory).items():
            monkeypatch.setenv(name, value)
        self.ledger = Ledger.open(url)
        self.loop = asyncio.Runner()
        self.runner = Runner(self.config(), self.ledger)

    def config(self) -> Any:
        return load_config(self.path)

    def run(self, *mailboxes: str) -> list[PassResult]:
        """One pass for each mailbox, all at once."""

        async def passes() -> list[PassResult]:
            return list(
                await asyncio.gather(*(self.runner.run_pass(m) for m in mailboxes))
            )

        return self.loop.run(passes())

    def reload(self) -> None:
        """What SIGHUP does: a new runner for the configuration as it is now."""
        self.loop.run(self.runner.aclose())
        self.runner = Runner(self.config(), self.ledger)

    def close(self) -> None:
        self.loop.run(self.runner.aclose())
        self.loop.close()
        self.ledger.close()


def add_meeting(sim: Simulator, mailbox: str, days_ago: int, hour: int) -> str:
    """A new, ended Apollo meeting in the mailbox's calendar."""
    start = datetime.now(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    start -= timedelta(days=days_ago)
    return sim.calendar(mailbox).add_event(
        subject=f"Added {days_ago}/{hour}",
        start=start,
        end=start + timedelta(minutes=30),
        categories=["Apollo"],
    )
