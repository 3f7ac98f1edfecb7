"""A wrong configuration: `check-config` names every problem, the daemon refuses it."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.sim import Simulator
from tests.e2e.support import (
    CliResult,
    Process,
    SimConfig,
    event_names,
    run_syncd,
    wait_until,
)

EX_CONFIG = 78

SYNCD_YAML = """\
ledger:
  url: sqlite:///{ledger}
schedule:
  interval: 5 minutes
graph:
  base_url: https://127.0.0.1:9/v1.0
  authority: https://127.0.0.1:9/7c9e6679-7425-40de-944b-e07fc1f90ae7
  client_id: 0f4a9d6e-3b2c-4e51-8a7f-6d1e2c3b4a59
  client_secret: ${{SYNCD_GRAPH_CLIENT_SECRET}}
inloox:
  base_url: https://127.0.0.1:9/odata
  api_key: ${{SYNCD_INLOOX_API_KEY}}
  colour: blue
users_dir: users.d
"""
ALICE_YAML = """\
mailbox: alice@contoso.example
timezone: Europe/Berlln
select:
  categories: [Track]
"""
BOB_YAML = """\
mailbox: bob@contoso.example
timezone: America/Los_Angeles
select:
  categories: [Track]
"""
SECRETS = {"SYNCD_GRAPH_CLIENT_SECRET": "not-a-real-secret",
           "SYNCD_INLOOX_API_KEY": "not-a-real-key"}


def write_config(directory: Path, syncd_yaml: str = SYNCD_YAML,
                 users: dict[str, str] | None = None) -> Path:
    """syncd.yaml and users.d/ in ``directory``; returns syncd.yaml."""
    (directory / "users.d").mkdir(parents=True)
    for name, text in (users or {"alice": ALICE_YAML, "bob": BOB_YAML}).items():
        (directory / "users.d" / f"{name}.yaml").write_text(text, encoding="utf-8")
    path = directory / "syncd.yaml"
    path.write_text(syncd_yaml.format(ledger=directory / "ledger.db"),
                    encoding="utf-8")
    return path


def problem_lines(result: CliResult) -> list[str]:
    return [line for line in result.stderr.splitlines() if ".yaml:" in line]


def test_check_config_names_all_three_mistakes(tmp_path: Path) -> None:
    """check-config names three mistakes by file, line and key, and exits 78."""
    path = write_config(tmp_path)
    alice = tmp_path / "users.d" / "alice.yaml"

    result = run_syncd("check-config", "-c", str(path), env=SECRETS)

    assert result.code == EX_CONFIG, result
    lines = problem_lines(result)
    assert len(lines) == 3, result
    assert lines[0].startswith(f"{path}:4: schedule.interval:")
    assert "5 minutes" in lines[0]
    assert lines[1].startswith(f"{path}:13: inloox.colour:")
    assert lines[2].startswith(f"{alice}:2: timezone:")
    assert "Europe/Berlln" in lines[2]
    assert "3 configuration problems found" in result.stderr
    assert "Traceback" not in result.output


def test_run_refuses_to_start_on_the_same_file(tmp_path: Path) -> None:
    """`syncd run` on that file exits 78 listing the problems, without starting."""
    path = write_config(tmp_path)

    result = run_syncd("run", "-c", str(path), env=SECRETS, timeout=20)

    assert result.code == EX_CONFIG, result
    assert len(problem_lines(result)) == 3, result
    assert "service_started" not in event_names(result.stderr)
    assert not (tmp_path / "ledger.db").exists()


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    """The same configuration with its mistakes fixed passes check-config (exit 0)."""
    fixed = SYNCD_YAML.replace("5 minutes", "5m").replace("  colour: blue\n", "")
    path = write_config(tmp_path, fixed, {"alice": ALICE_YAML.replace(
        "Berlln", "Berlin"), "bob": BOB_YAML})

    result = run_syncd("check-config", "-c", str(path), env=SECRETS)

    assert result.code == 0, result
    assert "2 user(s)" in result.stdout


def test_run_refuses_when_every_user_is_rejected(
        tmp_path: Path, syncd_process: Callable[..., Process]) -> None:
    """`syncd run` exits 78 when its only user's file is wrong: nothing to serve."""
    good_global = SYNCD_YAML.replace("5 minutes", "5m").replace("  colour: blue\n",
                                                                "")
    path = write_config(tmp_path, good_global, {"alice": ALICE_YAML})
    daemon = syncd_process("run", "-c", str(path), env=SECRETS)

    wait_until(lambda: daemon.popen.poll() is not None
               or "service_started" in daemon.stderr, 20, "exit or start")

    assert daemon.stop(signal.SIGTERM) == EX_CONFIG, daemon


def test_check_config_lists_an_unknown_project_beside_other_problems(
        sim: Simulator, sim_config: SimConfig) -> None:
    """A bad time zone in one user file does not hide, in another, a project
    name InLoox does not know: both are listed in one run."""
    users = sim_config.directory / "users.d"
    alice, chiyo = users / "alice.yaml", users / "chiyo.yaml"
    alice.write_text(alice.read_text().replace("Europe/Berlin", "Europe/Berlln"))
    chiyo.write_text(chiyo.read_text().replace(
        "project: d3a1f5e7-0c2b-4a69-8e4d-71b6c9f2a0d5", "project: NoSuchProject"))

    result = run_syncd("check-config", "-c", str(sim_config.path),
                       env=sim_config.env)

    assert result.code == EX_CONFIG, result
    lines = problem_lines(result)
    assert len(lines) == 2, result
    assert lines[0].startswith(f"{alice}:") and "Europe/Berlln" in lines[0]
    assert lines[1].startswith(f"{chiyo}:") and "NoSuchProject" in lines[1]


def test_problem_about_a_missing_key_is_not_masked(tmp_path: Path) -> None:
    """`inloox.api_key: environment variable … is not set` is a message, not
    a header: only registered secrets are masked in problem lines."""
    path = write_config(tmp_path)
    env = {k: v for k, v in SECRETS.items() if "INLOOX" not in k}

    result = run_syncd("check-config", "-c", str(path), env=env)

    assert result.code == EX_CONFIG, result
    assert "inloox.api_key: environment variable" in result.stderr, result


def test_the_daemon_counts_the_users_it_leaves_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alice's file has a problem: the daemon serves Bob, and the
    syncd_users_rejected gauge says one user is left out."""
    from syncd.daemon import load_config
    from syncd.metrics import REGISTRY

    good = SYNCD_YAML.replace("  colour: blue\n", "").replace("5 minutes", "5m")
    path = write_config(tmp_path, good)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)

    config = load_config(path)

    assert [u.mailbox for u in config.users] == ["bob@contoso.example"]
    assert REGISTRY.get_sample_value("syncd_users_rejected") == 1.0
