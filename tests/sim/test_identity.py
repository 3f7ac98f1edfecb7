"""The simulated identity platform, driven by the real msal library."""

from __future__ import annotations

import base64
import json

import httpx
import msal
import pytest

from syncd.sim import Simulator
from tests.sim.conftest import ALICE, BOB, GRAPH_SCOPE

CALENDARS_READ = "https://graph.microsoft.com/Calendars.Read"


@pytest.fixture(autouse=True)
def _requests_uses_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets these variables override a session's own `verify`.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def confidential(
    sim: Simulator, secret: str | None = None
) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        sim.client_id,
        client_credential=secret or sim.client_secret,
        authority=sim.authority,
        verify=str(sim.ca_path),
        instance_discovery=False,
    )


def public(sim: Simulator) -> msal.PublicClientApplication:
    return msal.PublicClientApplication(
        sim.client_id,
        authority=sim.authority,
        verify=str(sim.ca_path),
        instance_discovery=False,
    )


def device_login(app: msal.PublicClientApplication) -> dict[str, object]:
    flow = app.initiate_device_flow(scopes=[CALENDARS_READ])
    flow["interval"] = 0  # the simulator approves on the second poll
    return dict(app.acquire_token_by_device_flow(flow))


def test_client_credentials_token_opens_graph(sim: Simulator) -> None:
    """msal gets an app token that Graph accepts for any scenario mailbox."""
    result = confidential(sim).acquire_token_for_client(scopes=[GRAPH_SCOPE])

    response = httpx.get(
        f"{sim.graph_url}/users/{BOB}/events/nope",
        headers={"Authorization": f"Bearer {result['access_token']}"},
        verify=sim.ssl_context(),
    )
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == 3600
    assert response.json()["error"]["code"] == "ErrorItemNotFound"


def test_wrong_client_secret_is_invalid_client(sim: Simulator) -> None:
    """A wrong secret answers invalid_client with AADSTS7000215."""
    result = confidential(sim, "not-the-secret").acquire_token_for_client(
        scopes=[GRAPH_SCOPE]
    )

    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215:")


def test_rejected_client_secret_fault(sim: Simulator) -> None:
    """The reject_client_secret knob makes even the right secret fail."""
    sim.faults.reject_client_secret()

    result = confidential(sim).acquire_token_for_client(scopes=[GRAPH_SCOPE])

    assert result["error"] == "invalid_client"


def test_device_flow_pends_once_then_signs_in(sim: Simulator) -> None:
    """The first poll is authorization_pending, the second signs the user in."""
    app = public(sim)

    result = device_login(app)

    assert "access_token" in result and "refresh_token" in result
    assert result["id_token_claims"]["preferred_username"] == ALICE  # type: ignore[index]
    assert sim.stats.count("identity", "POST", "token", 400) == 1
    assert [a["username"] for a in app.get_accounts()] == [ALICE]


def test_client_info_names_user_and_tenant(sim: Simulator) -> None:
    """client_info is base64url JSON of the user's oid and the tenant id."""
    result = device_login(public(sim))

    raw = str(result["client_info"])
    info = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    assert info["utid"] == "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    assert info["uid"] == result["id_token_claims"]["oid"]  # type: ignore[index]


def test_silent_token_comes_from_cache_then_refreshes(sim: Simulator) -> None:
    """acquire_token_silent uses the cache, and force_refresh rotates tokens."""
    app = public(sim)
    first = device_login(app)
    account = app.get_accounts()[0]

    cached = app.acquire_token_silent([CALENDARS_READ], account=account)
    refreshed = app.acquire_token_silent(
        [CALENDARS_READ], account=account, force_refresh=True
    )

    assert cached["token_source"] == "cache"
    assert refreshed["token_source"] == "identity_provider"
    assert refreshed["access_token"] != first["access_token"]


def test_used_refresh_token_is_invalid_grant(sim: Simulator) -> None:
    """A refresh token works once: its rotation invalidates it."""
    first = device_login(public(sim))
    form = {
        "grant_type": "refresh_token",
        "client_id": sim.client_id,
        "refresh_token": first["refresh_token"],
        "scope": CALENDARS_READ,
    }
    url = f"{sim.authority}/oauth2/v2.0/token"

    once = httpx.post(url, data=form, verify=sim.ssl_context())
    twice = httpx.post(url, data=form, verify=sim.ssl_context())

    assert once.status_code == 200
    assert once.json()["refresh_token"] != first["refresh_token"]
    assert twice.status_code == 400
    assert twice.json()["error"] == "invalid_grant"


def test_revoked_refresh_tokens_fail_silent_refresh(sim: Simulator) -> None:
    """After revoke_refresh_tokens a forced silent refresh gets invalid_grant."""
    app = public(sim)
    device_login(app)
    sim.faults.revoke_refresh_tokens(ALICE)

    result = app.acquire_token_silent_with_error(
        [CALENDARS_READ], account=app.get_accounts()[0], force_refresh=True
    )

    assert result is not None and result["error"] == "invalid_grant"


def test_delegated_token_reads_me(sim: Simulator) -> None:
    """A device-code token reads /me as the signed-in user."""
    token = device_login(public(sim))["access_token"]

    response = httpx.get(
        f"{sim.graph_url}/me/events/{sim.event_id(ALICE, 'lunch')}",
        headers={"Authorization": f"Bearer {token}", "Prefer": 'IdType="ImmutableId"'},
        verify=sim.ssl_context(),
    )

    assert response.json()["subject"] == "Mittagessen mit Ümit"


def test_openid_configuration_points_at_this_authority(sim: Simulator) -> None:
    """Discovery names the v2.0 token and device-code endpoints of the tenant."""
    response = httpx.get(
        f"{sim.authority}/v2.0/.well-known/openid-configuration",
        verify=sim.ssl_context(),
    )

    document = response.json()
    assert document["token_endpoint"] == f"{sim.authority}/oauth2/v2.0/token"
    assert document["device_authorization_endpoint"] == (
        f"{sim.authority}/oauth2/v2.0/devicecode"
    )
    assert document["issuer"] == f"{sim.authority}/v2.0"
