"""A ready syncd configuration for a running simulator.

Secrets never go into YAML: the files reference ``${VAR}``, and each secret
is also written to ``credentials/<dotted key>`` (``graph.client_secret``,
``<mailbox>.inloox.api_key``), which syncd reads from
``$CREDENTIALS_DIRECTORY`` when the variable is unset.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from syncd.sim.simulator import Simulator

GRAPH_SECRET_ENV = "SYNCD_GRAPH_CLIENT_SECRET"
DEFAULT_SKIP = {
    "all_day": True,
    "declined": True,
    "tentative": False,
    "free": True,
    "private": False,
    "cancelled": True,
}


def inloox_key_env(mailbox: str) -> str:
    """The variable naming a user's InLoox key, e.g. SYNCD_INLOOX_API_KEY_ALICE."""
    local = re.sub(r"[^A-Za-z0-9]", "_", mailbox.split("@", 1)[0]).upper()
    return f"SYNCD_INLOOX_API_KEY_{local}"


def write_config(sim: Simulator, directory: Path, *, ledger_url: str | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    users_dir = directory / "users.d"
    users_dir.mkdir(exist_ok=True)
    _write_credentials(sim, directory / "credentials")
    # A copy of the CA beside the configuration: it stays usable (plan,
    # status) after the simulator, and its own files, are gone.
    shutil.copyfile(sim.ca_path, directory / "ca.pem")
    config_path = directory / "syncd.yaml"
    _dump(config_path, _global(sim, directory, ledger_url))
    for user in sim.scenario.users:
        _dump(users_dir / f"{user.key}.yaml", _user(sim, user.mailbox))
    return config_path


def config_env(
    sim: Simulator, directory: Path, *, include_secrets: bool
) -> dict[str, str]:
    """``CREDENTIALS_DIRECTORY`` (and, if asked, the secret variables themselves)."""
    env = {"CREDENTIALS_DIRECTORY": str((directory / "credentials").resolve())}
    if include_secrets:
        env[GRAPH_SECRET_ENV] = sim.client_secret
        for mailbox in sim.users:
            env[inloox_key_env(mailbox)] = sim.inloox_key(mailbox)
    return env


def _global(sim: Simulator, directory: Path, ledger_url: str | None) -> dict[str, Any]:
    ledger = ledger_url or f"sqlite:///{(directory / 'ledger.db').resolve()}"
    return {
        "ledger": {"url": ledger},
        "schedule": {"interval": "1m", "jitter": "5s"},
        "tls": {"ca_bundle": str(directory / "ca.pem")},
        "graph": {
            "base_url": sim.graph_url,
            "authority": sim.authority,
            "client_id": sim.client_id,
            "auth": "client_credentials",
            "client_secret": f"${{{GRAPH_SECRET_ENV}}}",
        },
        "inloox": {"base_url": sim.inloox_url},
        "users_dir": "users.d",
    }


def _user(sim: Simulator, mailbox: str) -> dict[str, Any]:
    user = sim.scenario.user(mailbox)
    return {
        "mailbox": user.mailbox,
        "timezone": user.timezone,
        "lookback": sim.scenario.lookback,
        "inloox": {"api_key": f"${{{inloox_key_env(user.mailbox)}}}"},
        "select": {"categories": list(sim.scenario.trigger_categories)},
        "rules": _rules(sim),
        "default_project": None,
        "skip": dict(DEFAULT_SKIP),
        "tag_event": True,
    }


def _rules(sim: Simulator) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for project in sim.scenario.projects:
        if project.categories:
            rules.append(
                {
                    "match": {"categories": list(project.categories)},
                    "project": project.project_id,
                    "task": None,
                }
            )
        if project.subject_prefix:
            rules.append(
                {
                    "match": {"subject": "^" + re.escape(project.subject_prefix)},
                    "project": project.project_id,
                    "task": None,
                }
            )
    return rules


def _write_credentials(sim: Simulator, directory: Path) -> None:
    directory.mkdir(mode=0o700, exist_ok=True)
    _secret(directory / "graph.client_secret", sim.client_secret)
    for mailbox in sim.users:
        _secret(directory / f"{mailbox}.inloox.api_key", sim.inloox_key(mailbox))


def _secret(path: Path, value: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(value)


def _dump(path: Path, data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    path.write_text("# written by the syncd simulator\n" + text, encoding="utf-8")
