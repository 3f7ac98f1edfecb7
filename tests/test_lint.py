"""House style, checked with the suite: ruff (line length 88) and mypy strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    """ruff reports no problem in the package or the tests."""
    result = _run("ruff", "check", "syncd", "tests", "bench")

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_finds_nothing() -> None:
    """mypy --strict (pyproject's settings) reports no error in the package."""
    result = _run("mypy")

    assert result.returncode == 0, result.stdout + result.stderr
