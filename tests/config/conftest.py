"""Helpers that write configuration files for the config tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

# A valid syncd.yaml with no optional key; line numbers below are relied on.
GLOBAL = """\
ledger:
  url: sqlite:///ledger.db
graph:
  authority: https://login.microsoftonline.com/contoso.example
  client_id: 0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6
  client_secret: ${SECRET}
inloox:
  base_url: https://contoso.inloox.app/odata
  api_key: ${API_KEY}
users_dir: users.d
"""

USER = """\
mailbox: alice@contoso.example
timezone: Europe/Berlin
"""

ENV = {"SECRET": "s3cret", "API_KEY": "k3y"}

Write = Callable[..., Path]


@pytest.fixture
def global_yaml() -> str:
    """A valid syncd.yaml without optional keys (lines 1-10, users_dir last)."""
    return GLOBAL


@pytest.fixture
def user_yaml() -> str:
    """A valid user file: alice@contoso.example in Europe/Berlin (lines 1-2)."""
    return USER


@pytest.fixture
def env() -> dict[str, str]:
    """The environment the references of ``global_yaml`` need."""
    return dict(ENV)


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Write syncd.yaml and users.d files; return the path of syncd.yaml."""

    def write_files(global_yaml: str, **users: str) -> Path:
        (tmp_path / "users.d").mkdir(exist_ok=True)
        (tmp_path / "syncd.yaml").write_text(textwrap.dedent(global_yaml))
        for stem, text in users.items():
            (tmp_path / "users.d" / f"{stem}.yaml").write_text(textwrap.dedent(text))
        return tmp_path / "syncd.yaml"

    return write_files
