"""msal against the simulated identity platform over TLS."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs
from typer.testing import CliRunner

from syncd.auth import ClientCredentialsAuth, DeviceCodeAuth
from syncd.cli import app
from syncd.errors import AuthError, TransientError
from syncd.graph import GraphCalendar
from syncd.sim import Simulator, load_scenario


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    scenario = load_scenario(None)
    quick = dataclasses.replace(
        scenario, settings=dataclasses.replace(scenario.settings,
                                               device_code_interval=0))
    with Simulator(quick) as simulator:
        yield simulator


def device_auth(sim: Simulator, cache: Path) -> DeviceCodeAuth:
    return DeviceCodeAuth(sim.authority, sim.client_id, token_cache=cache,
                          ca_bundle=sim.ca_path)


def test_client_credentials_over_tls(sim: Simulator) -> None:
    """An app-only token from the simulator, trusted through tls.ca_bundle."""
    auth = ClientCredentialsAuth(sim.authority, sim.client_id, sim.client_secret,
                                 ca_bundle=sim.ca_path)

    first = asyncio.run(auth.get_token(sim.users[0]))
    second = asyncio.run(auth.get_token(sim.users[1]))

    assert first and first == second


def test_untrusted_certificate_names_the_ca_bundle(sim: Simulator) -> None:
    """Without the simulator's CA the TLS handshake fails: check tls.ca_bundle."""
    auth = ClientCredentialsAuth(sim.authority, sim.client_id, sim.client_secret)

    with pytest.raises(TransientError, match=r"tls\.ca_bundle"):
        asyncio.run(auth.get_token(sim.users[0]))


def test_rejected_secret_is_an_auth_error(sim: Simulator) -> None:
    """A rejected client secret: AuthError naming graph.client_secret."""
    auth = ClientCredentialsAuth(sim.authority, sim.client_id, "not-the-secret",
                                 ca_bundle=sim.ca_path)

    with pytest.raises(AuthError, match=r"graph\.client_secret"):
        asyncio.run(auth.get_token(sim.users[0]))


def test_device_login_then_silent_refresh_reads_me(
    sim: Simulator, tmp_path: Path
) -> None:
    """Device login writes a 0600 cache; later tokens refresh silently; /me works."""
    cache = tmp_path / "tokens.json"
    printed: list[str] = []
    mailbox = sim.users[0]

    account = device_auth(sim, cache).login(printed.append, mailbox=mailbox)
    auth = device_auth(sim, cache)
    token = asyncio.run(auth.get_token(mailbox))
    refresh_before = json.loads(cache.read_text())["RefreshToken"]
    auth.invalidate(token)
    fresh = asyncio.run(auth.get_token(mailbox))
    refresh_after = json.loads(cache.read_text())["RefreshToken"]

    assert account.lower() == mailbox.lower()
    assert "/devicelogin" in printed[0] and token not in printed[0]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert fresh != token
    assert refresh_after != refresh_before

    source = GraphCalendar(sim.graph_url, auth, mode="delegated",
                           ca_bundle=sim.ca_path)

    async def first_event_id() -> str:
        event_id = sim.calendar(mailbox).events()[0]["id"]
        try:
            event = await source.get_event(mailbox, event_id)
        finally:
            await source.aclose()
        assert event is not None
        return event.id

    assert asyncio.run(first_event_id()) == sim.calendar(mailbox).events()[0]["id"]


def test_revoked_refresh_token_asks_for_login(sim: Simulator, tmp_path: Path) -> None:
    """A revoked refresh token: AuthError telling which command to run."""
    cache = tmp_path / "tokens.json"
    mailbox = sim.users[0]
    device_auth(sim, cache).login(lambda _: None)
    auth = device_auth(sim, cache)
    auth.invalidate(asyncio.run(auth.get_token(mailbox)))
    sim.faults.revoke_refresh_tokens(mailbox)

    with pytest.raises(AuthError, match="syncd login"):
        asyncio.run(auth.get_token(mailbox))


def test_corrupt_cache_is_moved_aside(sim: Simulator, tmp_path: Path) -> None:
    """A corrupt cache file is set aside; login afterwards works again."""
    cache = tmp_path / "tokens.json"
    cache.write_text('{"AccessToken": ')
    auth = device_auth(sim, cache)

    with pytest.raises(AuthError, match="syncd login"):
        asyncio.run(auth.get_token(sim.users[0]))
    device_auth(sim, cache).login(lambda _: None)

    assert len(list(tmp_path.glob("tokens.json.corrupt-*"))) == 1
    assert asyncio.run(auth.get_token(sim.users[0]))


@pytest.fixture
def bob_signs_in(sim: Simulator) -> Iterator[str]:
    """The device-code sign-in approves the second user instead of the first."""
    sim.faults.device_login_user = sim.users[1]
    try:
        yield sim.users[1]
    finally:
        sim.faults.device_login_user = None


def test_non_utf8_cache_is_moved_aside_and_login_works(
    sim: Simulator, tmp_path: Path
) -> None:
    """Non-UTF-8 bytes are a corrupt cache: moved aside, AuthError, login works."""
    cache, mailbox = tmp_path / "tokens.json", sim.users[0]
    cache.write_bytes(b"\xff\xfe\x00x")
    auth = device_auth(sim, cache)

    with capture_logs() as logs, pytest.raises(AuthError, match="syncd login"):
        asyncio.run(auth.get_token(mailbox))
    username = device_auth(sim, cache).login(lambda _: None, mailbox=mailbox)

    [aside] = tmp_path.glob("tokens.json.corrupt-*")
    assert aside.read_bytes() == b"\xff\xfe\x00x"
    assert [e["log_level"] for e in logs if e["event"] == "token_cache_corrupt"] == [
        "warning"]
    assert username.lower() == mailbox.lower()
    assert asyncio.run(auth.get_token(mailbox))


def test_refused_wrong_account_login_persists_nothing(
    sim: Simulator, tmp_path: Path, bob_signs_in: str
) -> None:
    """bob signing in for alice is refused; no file holds bob's tokens."""
    cache, alice = tmp_path / "tokens.json", sim.users[0]
    auth = device_auth(sim, cache)

    with pytest.raises(AuthError, match=f"signed in as {bob_signs_in}"):
        auth.login(lambda _: None, mailbox=alice)

    assert not cache.exists()
    with pytest.raises(AuthError, match="no signed-in account"):
        asyncio.run(auth.get_token(bob_signs_in))


def test_refused_login_keeps_the_previous_cache(
    sim: Simulator, tmp_path: Path
) -> None:
    """A refused sign-in leaves alice's earlier cache file byte for byte."""
    cache, alice, bob = tmp_path / "tokens.json", sim.users[0], sim.users[1]
    auth = device_auth(sim, cache)
    auth.login(lambda _: None, mailbox=alice)
    before = cache.read_bytes()
    sim.faults.device_login_user = bob
    try:
        with pytest.raises(AuthError, match=f"not as {alice}"):
            auth.login(lambda _: None, mailbox=alice)
    finally:
        sim.faults.device_login_user = None

    assert cache.read_bytes() == before
    assert asyncio.run(auth.get_token(alice))


def device_code_config(sim: Simulator, directory: Path, cache: Path) -> Path:
    path = sim.write_config(directory)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["graph"].update(auth="device_code", token_cache=str(cache))
    del config["graph"]["client_secret"]
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_cli_login_over_a_non_utf8_cache_names_the_user(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`syncd login` sets the bad cache aside and prints the signed-in username."""
    cache, mailbox = tmp_path / "tokens.json", sim.users[0]
    cache.write_bytes(b"\xff\xfe\x00x")
    path = device_code_config(sim, tmp_path / "etc", cache)
    for name, value in sim.config_env(tmp_path / "etc", include_secrets=True).items():
        monkeypatch.setenv(name, value)

    result = CliRunner().invoke(app, ["login", "-c", str(path), "--user", mailbox])

    assert result.exit_code == 0, result.output
    assert f"signed in as {mailbox.lower()}; token cache" in result.output.lower()
    assert len(list(tmp_path.glob("tokens.json.corrupt-*"))) == 1
