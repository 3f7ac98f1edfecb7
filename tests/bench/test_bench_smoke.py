"""The benchmark runs end to end at a tiny size and reports every figure.

No timing is asserted here: the figures depend on the machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.__main__ import main

FIGURES = {
    "quiet_graph_requests", "quiet_inloox_requests", "reread_ratio_50",
    "reread_ratio_default", "backlog_vs_bound", "backlog_whatif_vs_bound",
    "cpu_booked_event", "cpu_unchanged_event", "cpu_quiet_pass", "rss_peak",
    "rss_per_user",
    "scale_10k", "startup_help", "startup_check_config",
}


@pytest.mark.timeout(180)
def test_tiny_run_prints_and_writes_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two users with two events each: every figure is printed with its target,
    the JSON report holds each one as a finite number, and the counts that do
    not depend on the machine are exact (4 bookings, no InLoox call when quiet,
    one Graph request per quiet pass)."""
    out = tmp_path / "report.json"

    code = main(["--size", "small", "--users", "2", "--events", "2",
                 "--latency", "0.005", "--memory-users", "2", "3", "--out", str(out)])

    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    rows = {row["key"]: row for row in report["figures"]}
    assert code == 0
    assert set(rows) == FIGURES
    for row in rows.values():
        assert math.isfinite(row["value"])
        assert row["figure"] in printed
    assert report["main"]["backlog"]["booked"] == 4
    assert report["main"]["backlog_whatif"]["booked"] == 4
    assert rows["quiet_inloox_requests"]["value"] == 0
    assert rows["quiet_graph_requests"]["value"] == 1
    assert "lower bound" in printed
