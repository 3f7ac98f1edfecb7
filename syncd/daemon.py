"""``syncd run``: the service wired to the real configuration, ledger and runner."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import structlog

from syncd.config import load_config_lenient
from syncd.errors import ConfigError
from syncd.ledger import Ledger
from syncd.runner import Runner, register_secrets
from syncd.service import Service

log = structlog.get_logger("syncd.daemon")


def load_config(path: Path) -> Any:
    """The configuration with every valid user; a user's bad file is logged.

    Only a broken ``syncd.yaml`` raises: one bad user file never stops the
    others (they are served, the bad one is named in ``config_user_rejected``).
    """
    result = load_config_lenient(path)
    if result.config is None:
        raise ConfigError(list(result.problems))
    for problem in result.problems:
        log.error("config_user_rejected", problem=str(problem))
    register_secrets(result.config)
    return result.config


def run_daemon(path: Path, *, only: str | None = None) -> int:
    """Serve every configured user (or one) until SIGTERM/SIGINT; the exit code."""
    first = _only(load_config(path), only)
    ledger = Ledger.open(first.ledger.url)
    try:
        ledger.acquire_process_lock()
        asyncio.run(_serve(path, only, ledger))
    finally:
        ledger.close()
    return 0


async def _serve(path: Path, only: str | None, ledger: Ledger) -> None:
    def load() -> Any:
        config = _only(load_config(path), only)
        if config.ledger.url != ledger_url:
            log.warning("ledger_url_changed_ignored",
                        detail="ledger.url takes effect after a restart")
        return config

    ledger_url = _only(load_config(path), only).ledger.url
    service: Service[Any] = Service(load, lambda config: Runner(config, ledger),
                                    ready_check=ledger.ping)
    await service.run()


def _only(config: Any, mailbox: str | None) -> Any:
    """The configuration narrowed to one user (``syncd run --user``)."""
    if mailbox is None:
        return config
    users = tuple(u for u in config.users if u.mailbox == mailbox)
    return config.model_copy(update={"users": users}) if hasattr(
        config, "model_copy") else dataclasses.replace(config, users=users)
