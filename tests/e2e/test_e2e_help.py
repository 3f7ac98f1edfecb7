"""`syncd --help` starts fast: the heavy client libraries are not imported."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.support import run_syncd

HEAVY = ("msgraph", "kiota", "msal", "sqlalchemy", "azure", "apscheduler")
HELP_SECONDS = 3.0
"""Generous on a busy CI machine: --help itself takes a fraction of a second."""


def imported_modules(importtime_output: str) -> set[str]:
    """Module names from ``python -X importtime`` lines on stderr."""
    pattern = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", re.MULTILINE)
    return set(pattern.findall(importtime_output))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0].startswith(HEAVY))


def test_help_imports_no_client_library() -> None:
    """`syncd --help` imports neither msgraph, kiota, msal nor SQLAlchemy."""
    result = run_syncd("--help", python_flags=("-X", "importtime"))

    modules = imported_modules(result.stderr)
    assert result.code == 0, result
    assert "syncd.errors" in modules  # the run really was traced
    assert heavy(modules) == []
    assert "check-config" in result.stdout


def test_help_finishes_fast() -> None:
    """`syncd --help` prints the commands of the contract within a few seconds."""
    result = run_syncd("--help")

    assert result.code == 0, result
    assert result.seconds < HELP_SECONDS
    for command in ("run", "once", "plan", "status", "check-config", "login",
                    "demo", "sim"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command


def test_check_config_imports_no_client_library(tmp_path: Path) -> None:
    """check-config validates without loading msgraph, msal or SQLAlchemy."""
    path = tmp_path / "syncd.yaml"
    path.write_text("ledger: {url: 'sqlite:///x.db'}\n", encoding="utf-8")

    result = run_syncd("check-config", "-c", str(path),
                       python_flags=("-X", "importtime"))

    assert result.code == 78, result
    assert heavy(imported_modules(result.stderr)) == []
