"""`syncd demo`, the quick start: exits 0 on any day and books exactly once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.support import REPO, cli_env, run_syncd

DEMO_SECONDS = 120.0

# One process runs the demo as if today were each day of the coming week.
ON_EACH_DAY = """
import sys
from datetime import UTC, datetime, timedelta
from syncd.demo import run_demo

codes = []
for days in range(7):
    shift = timedelta(days=days)
    codes.append(run_demo(clock=lambda: datetime.now(UTC) + shift))
print("exit codes:", codes, file=sys.stderr)
sys.exit(max(codes))
"""


def test_demo_books_the_fortnight_then_only_the_change() -> None:
    """The quick-start demo: pass 2 books the added meeting and retracts the
    cancelled one, pass 3 changes nothing, and it says so."""
    result = run_syncd("demo", timeout=DEMO_SECONDS)

    assert result.code == 0, result
    out = result.stdout
    assert "pass 2 booked 1 new and retracted 1 cancelled" in out
    assert "pass 3 changed 0" in out
    assert "exactly once: yes" in out
    assert "sim~" not in out + result.stderr  # the scenario's client secret


@pytest.mark.slow
def test_demo_succeeds_on_every_day_of_the_week() -> None:
    """Yesterday's booked meeting is cancelled, so the demo shows a retraction
    whatever the weekday (the scenario's fortnight may be frozen by then)."""
    completed = subprocess.run(
        [sys.executable, "-c", ON_EACH_DAY], env=cli_env(None), cwd=REPO,
        capture_output=True, text=True, timeout=7 * DEMO_SECONDS, check=False)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.count("exactly once: yes") == 7
