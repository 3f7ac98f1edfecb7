"""Project names in rules: resolved through InLoox, checked by ``check-config``.

A rule (or ``default_project``) may name its project instead of giving the
id.  The engine resolves names once per pass through the client's cache;
this module lets ``syncd check-config`` report a name InLoox does not know,
when InLoox is reachable.  Tasks are given by id: a task name is a problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import structlog

from syncd.config import is_guid
from syncd.errors import AuthError, PermanentError, Problem, TransientError

log = structlog.get_logger(__name__)


async def check_project_names(
    config: Any, *, transport: httpx.AsyncBaseTransport | None = None
) -> list[Problem]:
    """Every project name of every user that InLoox does not know.

    Returns no problem for a name when InLoox cannot be asked (unreachable,
    credential refused): ``check-config`` must not fail for the network.
    """
    problems = [_task_problem(user, key, task)
                for user, key, _, task in _named(config) if task is not None]
    clients: dict[tuple[str | None, str | None], Any] = {}
    try:
        for user, key, project, _ in _named(config):
            if project is None:
                continue
            client = _client(config, user, clients, transport)
            if client is None:
                continue
            problem = await _check(client, user, key, project)
            if problem is not None:
                problems.append(problem)
    except (TransientError, AuthError) as exc:
        log.warning("project_check_skipped", error=str(exc))
    finally:
        for client in clients.values():
            await client.aclose()
    return problems


def _named(config: Any) -> Iterator[tuple[Any, str, str | None, str | None]]:
    """(user, key, project name or None, task name or None) for each name given."""
    for user in config.users:
        for index, rule in enumerate(user.rules):
            project = None if is_guid(rule.project) else rule.project
            task = None if rule.task is None or is_guid(rule.task) else rule.task
            if project is not None or task is not None:
                yield user, f"rules[{index}]", project, task
        default = user.default_project
        if default is not None and not is_guid(default):
            yield user, "default_project", default, None


async def _check(client: Any, user: Any, key: str, name: str) -> Problem | None:
    try:
        found = await client.resolve_project(name)
    except PermanentError as exc:
        return _problem(user, _project_key(key), str(exc))
    if found is not None:
        return None
    return _problem(user, _project_key(key),
                    f"InLoox has no project named {name!r}; check the spelling "
                    "or give the project id")


def _project_key(key: str) -> str:
    return key if key == "default_project" else f"{key}.project"


def _task_problem(user: Any, key: str, task: str) -> Problem:
    return _problem(user, f"{key}.task",
                    f"give the task id (a GUID), not its name ({task!r})")


def _problem(user: Any, key: str, message: str) -> Problem:
    source: Path | None = getattr(user, "source_file", None)
    return Problem(file=str(source) if source else str(user.mailbox), line=None,
                   key=key, message=message)


def _client(config: Any, user: Any, clients: dict[tuple[str | None, str | None], Any],
            transport: httpx.AsyncBaseTransport | None) -> Any | None:
    from syncd.http import HttpSettings
    from syncd.inloox import InLooxClient

    credentials = config.inloox_credentials(user)
    if not credentials.given:
        return None
    api_key = _secret(credentials.api_key)
    token = _secret(credentials.token)
    client = clients.get((api_key, token))
    if client is None:
        client = InLooxClient(config.inloox.base_url, api_key=api_key, token=token,
                              ca_bundle=config.tls.ca_bundle, transport=transport,
                              settings=HttpSettings(max_attempts=1))
        clients[(api_key, token)] = client
    return client


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())
