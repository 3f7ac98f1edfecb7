"""schedule.max_parallel_passes, and finding a user by mailbox."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.config import Config, UnknownUserError, load_config
from syncd.errors import ConfigError
from syncd.service import service_config_from

Write = Callable[..., Path]

BOB = """\
mailbox: Bob@Contoso.example
timezone: Europe/Berlin
"""


@pytest.fixture
def config(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> Config:
    """Alice and Bob, every optional key left out."""
    return load_config(write(global_yaml, alice=user_yaml, bob=BOB), env=env)


def test_max_parallel_passes_defaults_to_16(config: Config) -> None:
    """Left out, 16 passes run at once, and the service reads that."""
    assert config.schedule.max_parallel_passes == 16
    assert service_config_from(config).max_parallel_passes == 16


def test_max_parallel_passes_is_read(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """schedule.max_parallel_passes: 3 reaches the service."""
    text = global_yaml + "schedule:\n  max_parallel_passes: 3\n"

    config = load_config(write(text, alice=user_yaml), env=env)

    assert service_config_from(config).max_parallel_passes == 3


def test_max_parallel_passes_below_one_is_a_problem(
    write: Write, global_yaml: str, user_yaml: str, env: dict[str, str]
) -> None:
    """0 passes at once would never run a pass: refused."""
    text = global_yaml + "schedule:\n  max_parallel_passes: 0\n"

    with pytest.raises(ConfigError) as caught:
        load_config(write(text, alice=user_yaml), env=env)

    assert "schedule.max_parallel_passes" in str(caught.value)


def test_user_is_found_in_any_letter_case(config: Config) -> None:
    """Mailboxes compare without letter case and surrounding blanks."""
    assert config.user("ALICE@contoso.example").mailbox == "alice@contoso.example"
    assert config.user(" bob@contoso.EXAMPLE ").mailbox == "bob@contoso.example"


def test_mailbox_is_kept_in_lower_case(config: Config) -> None:
    """A mailbox written Bob@Contoso.example is the user bob@contoso.example."""
    assert [u.mailbox for u in config.users] == [
        "alice@contoso.example", "bob@contoso.example"]


def test_unknown_user_names_the_configured_ones(config: Config) -> None:
    """An unknown mailbox is an error listing who is configured."""
    with pytest.raises(UnknownUserError) as caught:
        config.user("carol@contoso.example")

    assert "'carol@contoso.example'" in str(caught.value)
    assert "alice@contoso.example, bob@contoso.example" in str(caught.value)


def test_user_lookup_follows_a_copy_with_other_users(config: Config) -> None:
    """A copy whose users changed finds its own users, not the original's."""
    assert config.user("bob@contoso.example")
    alice_only = config.model_copy(update={"users": config.users[:1]})

    with pytest.raises(UnknownUserError):
        alice_only.user("bob@contoso.example")
    assert config.user("bob@contoso.example").mailbox == "bob@contoso.example"


def test_user_lookup_leaves_equality_alone(
    config: Config, write: Write, global_yaml: str, user_yaml: str,
    env: dict[str, str]
) -> None:
    """A configuration that has looked a user up equals a fresh load of it."""
    config.user("alice@contoso.example")

    again = load_config(write(global_yaml, alice=user_yaml, bob=BOB), env=env)

    assert config == again
