"""``syncd run``: the service wired to the real configuration, ledger and runner."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from syncd.config import load_config_lenient
from syncd.errors import ConfigError
from syncd.health import HealthListenError
from syncd.ledger import Ledger
from syncd.metrics import USERS_REJECTED
from syncd.runner import Runner, register_secrets
from syncd.service import Service

log = structlog.get_logger("syncd.daemon")

EX_FAILURE = 1
EX_CONFIG = 78


def load_config(path: Path) -> Any:
    """The configuration with every valid user; a user's bad file is logged.

    Only a broken ``syncd.yaml`` raises: one bad user file never stops the
    others (they are served, the bad one is named in ``config_user_rejected``).
    """
    result = load_config_lenient(path)
    if result.config is None or not result.config.users:
        raise ConfigError(list(result.problems))
    for problem in result.problems:
        log.error("config_user_rejected", problem=str(problem))
    USERS_REJECTED.set(len(result.rejected))
    register_secrets(result.config)
    return result.config


def run_daemon(path: Path, *, only: str | None = None) -> int:
    """Serve every configured user (or one) until SIGTERM/SIGINT; the exit code.

    0 after a clean stop; 78 when the configuration is (or became) invalid
    before the service started; 1 when ``metrics.listen`` cannot be bound.
    A second daemon on the same SQLite ledger raises
    :class:`~syncd.errors.LedgerError` from the process lock.
    """
    try:
        first = _only(load_config(path), only)
    except ConfigError as error:
        log.error("config_invalid", problems=[str(p) for p in error.problems])
        return EX_CONFIG

    ledger = Ledger.open(first.ledger.url)
    try:
        ledger.acquire_process_lock()
        asyncio.run(_serve(path, only, ledger, first))
    except HealthListenError:
        return EX_FAILURE  # logged as health_listen_failed; systemd restarts it
    finally:
        ledger.close()
    return 0


async def _serve(path: Path, only: str | None, ledger: Ledger, first: Any) -> None:
    loaded = [first]

    def load() -> Any:
        if loaded:
            return loaded.pop()
        config = _only(load_config(path), only)
        if config.ledger.url != first.ledger.url:
            log.warning(
                "ledger_url_changed_ignored",
                detail="ledger.url takes effect after a restart",
            )
        return config

    limits: dict[int, asyncio.Semaphore] = {}

    def runner(config: Any) -> Runner:
        """A runner per configuration; across reloads they share one InLoox
        limit, so passes of an old runner still finishing and of the new one
        never exceed it together.  (Each runner is its own lease owner: the
        old one gives its leases back when its last pass ended.)"""
        size = config.http.inloox_concurrency
        limit = limits.setdefault(size, asyncio.Semaphore(size))
        return Runner(config, ledger, inloox_limit=limit)

    service: Service[Any] = Service(
        load,
        runner,
        ready_check=ledger.ping,
        user_states=lambda users: _user_states(ledger, users),
    )
    await service.run()


def _user_states(ledger: Ledger, mailboxes: Sequence[str]) -> dict[str, str]:
    """Each user's standing in the ledger (users it never saw are left out)."""
    states = {}
    for mailbox in mailboxes:
        state = ledger.user_state(mailbox)
        if state is not None:
            states[mailbox] = state.status
    return states


def _only(config: Any, mailbox: str | None) -> Any:
    """The configuration narrowed to one user (``syncd run --user``)."""
    if mailbox is None:
        return config
    users = tuple(u for u in config.users if u.mailbox == mailbox)
    return (
        config.model_copy(update={"users": users})
        if hasattr(config, "model_copy")
        else dataclasses.replace(config, users=users)
    )
