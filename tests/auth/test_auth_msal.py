"""msal providers against a fake identity platform (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import requests
import structlog
from msal.exceptions import MsalServiceError  # type: ignore[import-untyped, unused-ignore]

from syncd.auth import (
    ClientCredentialsAuth,
    DeviceCodeAuth,
    MsalHttpClient,
    default_instance_discovery,
)
from syncd.errors import AuthError, ConfigError, TransientError

AUTHORITY = "https://login.test/tenant-1"
CLIENT_ID = "client-1"
SECRET = "s3cret-value"
ALICE = "alice@contoso.example"


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class FakeIdentity:
    """Just enough of the identity platform for msal: discovery and grants."""

    def __init__(self) -> None:
        self.grants: list[str] = []
        self.refresh_tokens: set[str] = set()
        self.pending_polls = 1
        self.fail_with: httpx.Response | None = None
        self.username = ALICE

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json=self.configuration())
        if self.fail_with is not None:
            return self.fail_with
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if path.endswith("/devicecode"):
            return httpx.Response(200, json={
                "device_code": "dev-1", "user_code": "ABCD-EFGH",
                "verification_uri": "https://login.test/device", "expires_in": 900,
                "interval": 0, "message": "go"})
        return self.token(form)

    def configuration(self) -> dict[str, str]:
        return {"issuer": f"{AUTHORITY}/v2.0",
                "token_endpoint": f"{AUTHORITY}/oauth2/v2.0/token",
                "authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/devicecode"}

    def token(self, form: dict[str, str]) -> httpx.Response:
        grant = form["grant_type"]
        self.grants.append(grant)
        if grant == "client_credentials":
            if form.get("client_secret") != SECRET:
                return httpx.Response(401, json={
                    "error": "invalid_client", "error_codes": [7000215],
                    "error_description": "AADSTS7000215: Invalid client secret."})
            return httpx.Response(200, json=self.access())
        if grant.endswith("device_code") and self.pending_polls > 0:
            self.pending_polls -= 1
            return httpx.Response(400, json={"error": "authorization_pending"})
        if grant == "refresh_token":
            if form["refresh_token"] not in self.refresh_tokens:
                return httpx.Response(400, json={
                    "error": "invalid_grant",
                    "error_description": "AADSTS70000: refresh token revoked"})
            self.refresh_tokens.discard(form["refresh_token"])
        return httpx.Response(200, json=self.user_tokens())

    def access(self) -> dict[str, Any]:
        return {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                "expires_in": 3600}

    def user_tokens(self) -> dict[str, Any]:
        refresh = secrets.token_urlsafe(16)
        self.refresh_tokens.add(refresh)
        now = int(time.time())
        claims = {"iss": f"{AUTHORITY}/v2.0", "sub": "sub-1", "aud": CLIENT_ID,
                  "oid": "oid-1", "tid": "tenant-1",
                  "preferred_username": self.username, "iat": now, "exp": now + 3600}
        id_token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
        return {**self.access(), "refresh_token": refresh, "id_token": id_token,
                "client_info": b64({"uid": "oid-1", "utid": "tenant-1"}),
                "scope": "https://graph.microsoft.com/Calendars.Read"}


def http_client(identity: FakeIdentity) -> MsalHttpClient:
    return MsalHttpClient(transport=httpx.MockTransport(identity))


def app_auth(identity: FakeIdentity, secret: str = SECRET) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(AUTHORITY, CLIENT_ID, secret,
                                 http_client=http_client(identity))


def test_client_credentials_token_is_cached_and_shared() -> None:
    """One grant serves every mailbox until the token is invalidated."""
    identity = FakeIdentity()
    auth = app_auth(identity)

    async def tokens() -> list[str]:
        return [await auth.get_token(m) for m in (ALICE, "bob@x", ALICE)]

    first = asyncio.run(tokens())

    assert len(set(first)) == 1
    assert identity.grants == ["client_credentials"]


def test_a_token_msal_served_from_its_cache_is_reused_without_msal() -> None:
    """Once msal answered from its cache, the token is reused without asking it."""
    identity = FakeIdentity()
    auth = app_auth(identity)
    asked: list[object] = []

    async def tokens() -> list[str]:
        first = [await auth.get_token(ALICE), await auth.get_token(ALICE)]
        app = auth._app
        acquire = app.acquire_token_for_client
        app.acquire_token_for_client = lambda **kw: asked.append(kw) or acquire(**kw)
        return first + [await auth.get_token(m) for m in (ALICE, "bob@x")]

    got = asyncio.run(tokens())

    assert len(set(got)) == 1
    assert asked == []
    assert identity.grants == ["client_credentials"]


def test_a_reused_token_goes_back_to_msal_before_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten minutes before expiry msal is asked again (it renews at five)."""
    identity = FakeIdentity()
    auth = app_auth(identity)
    started = time.time()

    async def token_at(seconds_later: float) -> str:
        monkeypatch.setattr(time, "time", lambda: started + seconds_later)
        return await auth.get_token(ALICE)

    async def tokens() -> list[str]:
        return [await token_at(0), await token_at(1), await token_at(3200),
                await token_at(3400)]

    got = asyncio.run(tokens())

    assert got[0] == got[1] == got[2] != got[3]
    assert identity.grants == ["client_credentials", "client_credentials"]


def test_invalidate_ends_the_reuse_of_a_token() -> None:
    """A token Graph refused is not reused: the next request gets a new one."""
    identity = FakeIdentity()
    auth = app_auth(identity)

    async def tokens() -> tuple[str, str]:
        old = [await auth.get_token(ALICE), await auth.get_token(ALICE)][-1]
        auth.invalidate(old)
        return old, await auth.get_token(ALICE)

    old, new = asyncio.run(tokens())

    assert old != new
    assert identity.grants == ["client_credentials", "client_credentials"]


def test_invalidate_forces_a_new_client_credentials_token() -> None:
    """After a 401 the next get_token asks the platform again."""
    identity = FakeIdentity()
    auth = app_auth(identity)
    old = asyncio.run(auth.get_token(ALICE))

    auth.invalidate(old)
    new = asyncio.run(auth.get_token(ALICE))

    assert new != old
    assert identity.grants == ["client_credentials", "client_credentials"]


def test_bad_secret_is_an_auth_error_naming_the_key() -> None:
    """AADSTS7000215 pauses the user and says to check graph.client_secret."""
    auth = app_auth(FakeIdentity(), secret="wrong")

    with pytest.raises(AuthError, match=r"graph\.client_secret") as caught:
        asyncio.run(auth.get_token(ALICE))

    assert "AADSTS7000215" in str(caught.value)
    assert "wrong" not in str(caught.value)


def test_identity_outage_is_transient() -> None:
    """A 503 from the token endpoint is a TransientError."""
    identity = FakeIdentity()
    identity.fail_with = httpx.Response(503, text="busy")

    with pytest.raises(TransientError):
        asyncio.run(app_auth(identity).get_token(ALICE))


def test_unreachable_identity_platform_is_transient() -> None:
    """A refused connection is a TransientError, not a crash."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    auth = ClientCredentialsAuth(
        AUTHORITY, CLIENT_ID, SECRET,
        http_client=MsalHttpClient(transport=httpx.MockTransport(refuse)))

    with pytest.raises(TransientError):
        asyncio.run(auth.get_token(ALICE))


def test_http_authority_is_a_configuration_error() -> None:
    """msal needs https: a plain http authority is a ConfigError on the key."""
    with pytest.raises(ConfigError) as raised:
        ClientCredentialsAuth("http://login.test/t", CLIENT_ID, SECRET)

    [problem] = raised.value.problems
    assert problem.key == "graph.authority" and "https://" in problem.message


def test_instance_discovery_only_for_microsoft() -> None:
    """Instance discovery stays msal's default for Microsoft, off elsewhere."""
    assert default_instance_discovery("https://login.microsoftonline.com/t") is None
    assert default_instance_discovery("https://127.0.0.1:8443/t") is False


def device_auth(identity: FakeIdentity, cache: Path) -> DeviceCodeAuth:
    return DeviceCodeAuth(AUTHORITY, CLIENT_ID, token_cache=cache,
                          http_client=http_client(identity),
                          now=lambda: datetime(2025, 1, 15, 9, 0, tzinfo=UTC))


def test_device_login_prints_the_code_and_writes_a_private_cache(
    tmp_path: Path,
) -> None:
    """login prints URI and code, never a token; the cache file is 0600."""
    identity, cache = FakeIdentity(), tmp_path / "state" / "tokens.json"
    printed: list[str] = []

    username = device_auth(identity, cache).login(printed.append, mailbox=ALICE)

    assert username == ALICE
    assert printed == ["To sign in, open https://login.test/device and enter the "
                       "code ABCD-EFGH (valid for 15 minutes)."]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert json.loads(cache.read_text())["RefreshToken"]


def test_login_as_another_user_is_refused(tmp_path: Path) -> None:
    """Signing in as bob for alice's entry is an AuthError."""
    identity = FakeIdentity()
    identity.username = "bob@contoso.example"

    with pytest.raises(AuthError, match=r"signed in as bob@contoso\.example"):
        device_auth(identity, tmp_path / "c.json").login(lambda _: None,
                                                          mailbox=ALICE)


def test_silent_refresh_persists_the_rotated_refresh_token(tmp_path: Path) -> None:
    """A refresh rotates the refresh token; the file holds the new one at once."""
    identity, cache = FakeIdentity(), tmp_path / "tokens.json"
    device_auth(identity, cache).login(lambda _: None)
    before = json.loads(cache.read_text())["RefreshToken"]
    auth = device_auth(identity, cache)
    first = asyncio.run(auth.get_token(ALICE))

    auth.invalidate(first)
    second = asyncio.run(auth.get_token(ALICE))

    after = json.loads(cache.read_text())["RefreshToken"]
    assert second != first
    assert identity.grants.count("refresh_token") == 1
    assert [v["secret"] for v in after.values()] != [
        v["secret"] for v in before.values()]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_cached_token_is_reused_from_the_file(tmp_path: Path) -> None:
    """A fresh process reads the cached access token without a grant."""
    identity, cache = FakeIdentity(), tmp_path / "tokens.json"
    device_auth(identity, cache).login(lambda _: None)
    grants = len(identity.grants)

    asyncio.run(device_auth(identity, cache).get_token(ALICE))

    assert len(identity.grants) == grants


def test_no_login_yet_says_which_command_to_run(tmp_path: Path) -> None:
    """Without a cache: AuthError naming `syncd login`."""
    auth = device_auth(FakeIdentity(), tmp_path / "none.json")

    with pytest.raises(AuthError, match=f"syncd login -c FILE --user {ALICE}"):
        asyncio.run(auth.get_token(ALICE))


def test_rejected_refresh_token_is_an_auth_error(tmp_path: Path) -> None:
    """A revoked refresh token pauses the user with the login advice."""
    identity, cache = FakeIdentity(), tmp_path / "tokens.json"
    device_auth(identity, cache).login(lambda _: None)
    auth = device_auth(identity, cache)
    auth.invalidate(asyncio.run(auth.get_token(ALICE)))
    identity.refresh_tokens.clear()

    with pytest.raises(AuthError, match="syncd login"):
        asyncio.run(auth.get_token(ALICE))


def test_corrupt_cache_is_moved_aside_with_a_warning(tmp_path: Path) -> None:
    """An unreadable cache is renamed .corrupt-<time>; the user must log in again."""
    cache = tmp_path / "tokens.json"
    cache.write_text("{not json")
    auth = device_auth(FakeIdentity(), cache)

    with structlog.testing.capture_logs() as logs, pytest.raises(AuthError):
        asyncio.run(auth.get_token(ALICE))

    aside = tmp_path / "tokens.json.corrupt-20250115T090000Z"
    assert aside.read_text() == "{not json"
    assert not cache.exists()
    warnings = [e for e in logs if e["event"] == "token_cache_corrupt"]
    assert warnings and warnings[0]["log_level"] == "warning"


def test_login_replacing_the_file_is_picked_up(tmp_path: Path) -> None:
    """A daemon's provider re-reads the cache after `syncd login` replaced it."""
    identity, cache = FakeIdentity(), tmp_path / "tokens.json"
    daemon = device_auth(identity, cache)
    with pytest.raises(AuthError):
        asyncio.run(daemon.get_token(ALICE))

    device_auth(identity, cache).login(lambda _: None)

    assert asyncio.run(daemon.get_token(ALICE))


def test_existing_wide_temp_file_does_not_widen_the_cache(tmp_path: Path) -> None:
    """Even a leftover 0644 temp file ends up as a 0600 cache."""
    identity, cache = FakeIdentity(), tmp_path / "tokens.json"
    leftover = tmp_path / f".tokens.json.{os.getpid()}.tmp"
    leftover.write_text("")
    leftover.chmod(0o644)

    device_auth(identity, cache).login(lambda _: None)

    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_a_loose_cache_mode_is_tightened_with_one_warning(tmp_path: Path) -> None:
    """A 0644 cache served without a save still ends up 0600; one warning."""
    identity, cache = FakeIdentity(), tmp_path / "tokens.json"
    device_auth(identity, cache).login(lambda _: None)
    cache.chmod(0o644)
    auth = device_auth(identity, cache)

    with structlog.testing.capture_logs() as logs:
        asyncio.run(auth.get_token(ALICE))
        asyncio.run(auth.get_token(ALICE))

    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    loose = [e for e in logs if e["event"] == "token_cache_mode_loose"]
    assert [(e["log_level"], e["mode"]) for e in loose] == [("warning", "0644")]


def test_a_save_over_a_loose_cache_makes_it_private(tmp_path: Path) -> None:
    """A login over a 0644 cache file leaves a 0600 one."""
    identity, cache = FakeIdentity(), tmp_path / "tokens.json"
    device_auth(identity, cache).login(lambda _: None)
    cache.chmod(0o644)

    device_auth(identity, cache).login(lambda _: None)

    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


class BrokenPost:
    """An msal http_client whose token requests raise ``error``."""

    def __init__(self, identity: FakeIdentity, error: Exception) -> None:
        self._inner = http_client(identity)
        self._error = error

    def get(self, url: str, **kwargs: Any) -> Any:
        return self._inner.get(url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        raise self._error


def broken_auth(error: Exception) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(AUTHORITY, CLIENT_ID, SECRET,
                                 http_client=BrokenPost(FakeIdentity(), error))


@pytest.mark.parametrize("error", [
    httpx.ConnectError("refused"),
    requests.ConnectionError("refused"),
    MsalServiceError("HTTP Error: 503", error=None, error_description=None),
])
def test_network_and_msal_errors_are_transient(error: Exception) -> None:
    """Transport errors and msal's own service errors: TransientError."""
    with pytest.raises(TransientError, match=type(error).__name__):
        asyncio.run(broken_auth(error).get_token(ALICE))


def test_our_own_bugs_are_not_disguised_as_transient() -> None:
    """Anything else (a bug) propagates as itself, for the runner to report."""
    with pytest.raises(KeyError, match="bug"):
        asyncio.run(broken_auth(KeyError("bug")).get_token(ALICE))


def test_a_non_json_token_answer_is_transient() -> None:
    """A proxy's HTML error page instead of JSON: try again later."""
    identity = FakeIdentity()
    identity.fail_with = httpx.Response(502, text="<html>bad gateway</html>")

    with pytest.raises(TransientError):
        asyncio.run(app_auth(identity).get_token(ALICE))
