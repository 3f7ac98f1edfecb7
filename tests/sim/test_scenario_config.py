"""Scenario files, the written config, the control API and ``serve``."""

from __future__ import annotations

import io
import threading
import time
from datetime import date
from pathlib import Path

import httpx
import pytest
import yaml

from syncd.sim import ScenarioError, Simulator, load_scenario, serve
from syncd.sim.scenario import parse_scenario
from tests.sim.conftest import ALICE, BOB, CHIYO, delta_url, whole_round


def test_default_scenario_is_relative_to_today() -> None:
    """Day 0 is the Monday two weeks before the current week."""
    scenario = load_scenario(None)

    assert scenario.anchor_date(date(2025, 1, 15)) == date(2024, 12, 30)
    assert scenario.anchor_date(date(2025, 1, 13)) == date(2024, 12, 30)
    assert scenario.anchor_date(date(2025, 1, 19)) == date(2024, 12, 30)


def test_default_scenario_users_and_projects() -> None:
    """Three users and the Apollo, Zephyr and Internal projects."""
    scenario = load_scenario(None)

    assert [u.mailbox for u in scenario.users] == [ALICE, BOB, CHIYO]
    assert [p.name for p in scenario.projects] == ["Apollo", "Zephyr", "Internal"]


def test_scenario_errors_name_the_key() -> None:
    """A user without InLoox credentials is reported by its key path."""
    raw = {
        "tenant_id": "t",
        "app": {"client_id": "c", "client_secret": "s"},
        "users": [{"mailbox": "x@y.example"}],
    }

    with pytest.raises(ScenarioError, match=r"users\[0\]\.inloox"):
        parse_scenario(raw)


def test_written_config_has_no_secret(sim: Simulator, tmp_path: Path) -> None:
    """syncd.yaml and users.d reference secrets; credentials/ holds them."""
    path = sim.write_config(tmp_path)

    texts = [path.read_text()] + [
        p.read_text() for p in (tmp_path / "users.d").iterdir()
    ]
    assert all(sim.client_secret not in t for t in texts)
    assert all(sim.inloox_key(m) not in t for t in texts for m in sim.users)
    credentials = tmp_path / "credentials"
    assert (credentials / "graph.client_secret").read_text() == sim.client_secret
    assert (credentials / f"{BOB}.inloox.api_key").read_text() == sim.inloox_key(BOB)
    assert (credentials / "graph.client_secret").stat().st_mode & 0o077 == 0


def test_written_config_uses_contract_keys(sim: Simulator, tmp_path: Path) -> None:
    """The graph, tls, inloox and user keys are the contract's."""
    path = sim.write_config(tmp_path, ledger_url="sqlite:///x.db")

    config = yaml.safe_load(path.read_text())
    alice = yaml.safe_load((tmp_path / "users.d" / "alice.yaml").read_text())
    assert config["graph"]["authority"] == sim.authority
    assert config["graph"]["base_url"] == sim.graph_url
    assert config["graph"]["client_secret"] == "${SYNCD_GRAPH_CLIENT_SECRET}"
    assert config["tls"]["ca_bundle"] == str(tmp_path / "ca.pem")
    assert (tmp_path / "ca.pem").read_bytes() == sim.ca_path.read_bytes()
    assert config["inloox"]["base_url"] == sim.inloox_url
    assert config["ledger"]["url"] == "sqlite:///x.db"
    assert alice["inloox"]["api_key"] == "${SYNCD_INLOOX_API_KEY_ALICE}"
    assert alice["select"]["categories"] == ["Track"]
    assert {
        "match": {"subject": r"^\[APOLLO\]"},
        "task": None,
        "project": "6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10",
    } in alice["rules"]


def test_written_config_loads(sim: Simulator, tmp_path: Path) -> None:
    """syncd's own loader accepts the config with the simulator's environment."""
    config_module = pytest.importorskip("syncd.config")
    path = sim.write_config(tmp_path)

    config = config_module.load_config(path, env=sim.config_env(tmp_path))

    assert sorted(u.mailbox for u in config.users) == sorted(sim.users)


def test_control_api_edits_calendar_and_faults(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """/_sim/ adds an event, deletes one, arms a fault and reports stats."""
    _, link, _ = whole_round(graph, delta_url(sim, ALICE, anchor))
    control = f"{sim.control_url}/calendars/{ALICE}"
    with httpx.Client(verify=sim.ssl_context()) as client:
        added = client.post(
            f"{control}/events",
            json={
                "subject": "Per API",
                "start": f"{anchor}T10:00:00+01:00",
                "end": f"{anchor}T11:00:00+01:00",
                "categories": ["Track"],
            },
        ).json()["id"]
        lunch = client.get(f"{control}/keys/lunch").json()["id"]
        client.delete(f"{control}/events/{lunch}")
        client.post(f"{sim.control_url}/faults", json={"throttle_graph": {"count": 1}})
        stats = client.get(f"{sim.control_url}/stats").json()

    throttled = graph.get(link)
    items, _, _ = whole_round(graph, link)
    assert throttled.status_code == 429
    assert {i["id"] for i in items} == {added, lunch}
    assert stats["requests"][0]["service"] in ("graph", "identity")


def test_control_api_takes_short_weekdays_and_refuses_bad_fields(
    sim: Simulator, graph: httpx.Client, anchor: date
) -> None:
    """A series on ["mon"] is made as in a scenario file; a field of the wrong
    shape is a 400 and leaves the calendar readable."""
    control = f"{sim.control_url}/calendars/{ALICE}"
    meeting = {"subject": "Weekly", "start": f"{anchor}T10:00:00Z",
               "end": f"{anchor}T11:00:00Z"}
    with httpx.Client(verify=sim.ssl_context()) as client:
        series = client.post(f"{control}/series", json={
            **meeting, "days": ["mon"], "until": str(anchor)})
        bad_day = client.post(f"{control}/series", json={
            **meeting, "days": ["moonday"], "until": str(anchor)})
        bad_organizer = client.post(f"{control}/events",
                                    json={**meeting, "organizer": "text"})
        bad_categories = client.post(f"{control}/events",
                                     json={**meeting, "categories": "Apollo"})

    assert series.status_code == 201
    assert bad_day.status_code == 400 and "not a weekday" in bad_day.text
    assert bad_organizer.status_code == 400 and "organizer" in bad_organizer.text
    assert bad_categories.status_code == 400 and "categories" in bad_categories.text
    assert graph.get(delta_url(sim, ALICE, anchor)).status_code == 200


def test_serve_prints_usage_without_secrets(tmp_path: Path) -> None:
    """serve() prints URLs, CA, config and exports, never a secret."""
    out = io.StringIO()
    stop = threading.Event()
    worker = threading.Thread(
        target=serve, args=(None, 0, tmp_path), kwargs={"out": out, "stop": stop}
    )
    worker.start()
    for _ in range(100):
        if "Ctrl-C" in out.getvalue():
            break
        time.sleep(0.05)
    stop.set()
    worker.join(10)

    text = out.getvalue()
    scenario = load_scenario(None)
    assert "export CREDENTIALS_DIRECTORY=" in text
    assert str(tmp_path / "syncd.yaml") in text
    assert "/odata" in text and "/v1.0" in text and "ca.pem" in text
    assert scenario.client_secret not in text
    assert all(u.api_key not in text for u in scenario.users)
