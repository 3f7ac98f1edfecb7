"""Every key left out takes its documented default."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from syncd.config import Config, UserConfig, load_config

Write = Callable[..., Path]


@pytest.fixture
def config(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> Config:
    """The minimal configuration with one user, alice."""
    return load_config(write(global_yaml, alice=user_yaml), env=env)


@pytest.fixture
def user(config: Config) -> UserConfig:
    """Alice, with every optional user key left out."""
    return config.users[0]


def test_schedule_defaults(config: Config) -> None:
    """A pass runs every 5m with up to 30s of jitter."""
    schedule = config.schedule

    assert schedule.interval == timedelta(minutes=5)
    assert schedule.jitter == timedelta(seconds=30)


def test_graph_defaults(config: Config) -> None:
    """Graph v1.0, app-only auth, no token cache, pages of 50."""
    graph = config.graph

    assert graph.base_url == "https://graph.microsoft.com/v1.0"
    assert graph.auth == "client_credentials"
    assert graph.token_cache is None
    assert graph.page_size == 50


def test_tls_metrics_log_defaults(config: Config) -> None:
    """No extra CA, no metrics listener, log format auto at level info."""
    assert config.tls.ca_bundle is None
    assert config.metrics.listen is None
    assert (config.log.format, config.log.level) == ("auto", "info")


def test_http_defaults(config: Config) -> None:
    """Timeouts 30s/10s; 64 in flight, 4 per mailbox for Graph, 16 for InLoox."""
    http = config.http

    assert http.timeout == timedelta(seconds=30)
    assert http.connect_timeout == timedelta(seconds=10)
    assert http.max_concurrency == 64
    assert http.graph_concurrency == 4
    assert http.inloox_concurrency == 16


def test_retry_and_pass_defaults(config: Config) -> None:
    """5 attempts from 1s up to 5m; a pass has 10m."""
    assert config.retry.max_attempts == 5
    assert config.retry.base_delay == timedelta(seconds=1)
    assert config.retry.max_delay == timedelta(minutes=5)
    assert config.pass_timeout == timedelta(minutes=10)


def test_users_dir_and_source(config: Config, tmp_path: Path) -> None:
    """users_dir is relative to syncd.yaml; source is the file loaded."""
    assert config.users_dir == tmp_path / "users.d"
    assert config.source == tmp_path / "syncd.yaml"


def test_user_window_defaults(user: UserConfig) -> None:
    """A user looks 14d back and 1d ahead."""
    assert user.lookback == timedelta(days=14)
    assert user.horizon == timedelta(days=1)


def test_user_policy_defaults(user: UserConfig) -> None:
    """Defaults of the booking and change policies."""
    assert user.tag_event is True
    assert user.book_before_end is False
    assert user.max_duration == timedelta(hours=12)
    assert user.backdating_limit == timedelta(days=30)
    assert (user.on_change, user.on_cancel) == ("update", "retract")
    assert user.freeze_after == timedelta(days=7)


def test_user_mapping_defaults(user: UserConfig, tmp_path: Path) -> None:
    """No trigger categories, no rules, no default project, no own credential."""
    assert user.select.categories == ()
    assert user.rules == ()
    assert user.default_project is None
    assert user.inloox is None
    assert user.source_file == tmp_path / "users.d" / "alice.yaml"


def test_skip_defaults(user: UserConfig) -> None:
    """Skip all-day, declined, free and cancelled; book tentative and private."""
    skip = user.skip

    assert (skip.all_day, skip.declined, skip.tentative) == (True, True, False)
    assert (skip.free, skip.private, skip.cancelled) == (True, False, True)


def test_rule_name_defaults_to_its_position(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """An unnamed rule is called rules[i]; its absent task is None."""
    rules_yaml = (
        user_yaml
        + """\
rules:
  - name: first
    match: {categories: [Apollo]}
    project: Apollo
  - match: {categories: [Zeus]}
    project: Zeus
"""
    )
    config = load_config(write(global_yaml, alice=rules_yaml), env=env)

    rules = config.users[0].rules
    assert [r.name for r in rules] == ["first", "rules[1]"]
    assert rules[1].task is None


def test_config_is_frozen(config: Config) -> None:
    """Models are immutable once loaded."""
    with pytest.raises(ValueError, match="frozen"):
        config.schedule.interval = timedelta(0)  # type: ignore[misc]
