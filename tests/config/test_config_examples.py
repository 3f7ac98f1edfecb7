"""The commented example files in config/ load cleanly."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from syncd.config import is_guid, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "syncd.yaml"
ENV = {
    "SYNCD_TENANT_ID": "contoso.example",
    "SYNCD_GRAPH_CLIENT_ID": "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
    "SYNCD_GRAPH_CLIENT_SECRET": "graph-secret",
    "SYNCD_INLOOX_API_KEY": "inloox-key",
    "SYNCD_INLOOX_API_KEY_ALICE": "alice-key",
    "STATE_DIRECTORY": "/var/lib/syncd",
}


def test_example_loads_with_its_variables() -> None:
    """config/syncd.yaml with alice and bob loads without a problem."""
    config = load_config(EXAMPLE, env=ENV)

    assert config.ledger.url == "sqlite:////var/lib/syncd/ledger.db"
    assert config.graph.authority == "https://login.microsoftonline.com/contoso.example"
    assert [u.mailbox for u in config.users] == [
        "alice@contoso.example",
        "bob@contoso.example",
    ]


def test_example_users() -> None:
    """alice has her own key and two rules; bob maps by name and keeps cancels."""
    config = load_config(EXAMPLE, env=ENV)
    alice, bob = config.users

    assert alice.select.categories == ("Track",)
    assert [r.name for r in alice.rules] == ["apollo by category", "rules[1]"]
    assert config.inloox_credentials(alice).api_key is not None
    assert config.inloox_credentials(alice).api_key.get_secret_value() == "alice-key"
    assert config.inloox_credentials(bob).api_key is not None
    assert config.inloox_credentials(bob).api_key.get_secret_value() == "inloox-key"
    assert [r.project for r in bob.rules] == [
        "Fabrikam Rollout",
        "0b7e2f3c-51a4-4c8e-8d2b-7a9f1e6c3d45",
        "Site Support",
    ]
    assert (bob.skip.tentative, bob.on_cancel) == (True, "keep")
    assert bob.lookback == timedelta(days=14)


def test_example_tasks_are_ids() -> None:
    """Every task in the examples is a GUID: check-config refuses a task name."""
    config = load_config(EXAMPLE, env=ENV)
    tasks = [r.task for u in config.users for r in u.rules if r.task is not None]

    assert tasks == ["3c9d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f"]
    assert all(is_guid(task) for task in tasks)
