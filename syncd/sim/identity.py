"""The Microsoft identity platform, as far as msal needs it.

OIDC discovery, the v2.0 token endpoint (client credentials, device code,
rotating refresh tokens) and the device-code endpoint.  Access tokens are
opaque random strings mapped to the grant they stand for.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from syncd.sim.calendar import Clock
from syncd.sim.faults import Faults
from syncd.sim.http import Request, Response, json_response
from syncd.sim.scenario import Scenario

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
_DISCOVERY = "/v2.0/.well-known/openid-configuration"


@dataclass(frozen=True)
class Grant:
    """What an access token stands for: the app, and the user if delegated."""

    client_id: str
    mailbox: str | None
    expires_at: datetime


@dataclass
class _DeviceFlow:
    client_id: str
    scope: str
    user_code: str
    expires_at: datetime
    polls: int = 0


@dataclass(frozen=True)
class _RefreshToken:
    client_id: str
    mailbox: str
    scope: str


class Identity:
    """Issues and checks tokens for the scenario's tenant and app."""

    def __init__(self, scenario: Scenario, faults: Faults, clock: Clock) -> None:
        self._scenario = scenario
        self._faults = faults
        self._clock = clock
        self._lock = threading.Lock()
        self._access: dict[str, Grant] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._devices: dict[str, _DeviceFlow] = {}
        self.issued: dict[str, int] = {}

    # ----- used by the other services ---------------------------------

    def check(self, authorization: str) -> Grant | None:
        """The grant behind an ``Authorization: Bearer`` header, if valid now."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        with self._lock:
            grant = self._access.get(token.strip())
        if grant is None or grant.expires_at <= self._clock():
            return None
        return grant

    def expire_access_tokens(self) -> None:
        """Make every issued access token invalid (as after a key rollover)."""
        with self._lock:
            self._access.clear()

    # ----- HTTP -------------------------------------------------------

    def handle(self, request: Request, base_url: str) -> Response:
        parts = request.path.strip("/").split("/")
        tenant, rest = parts[0], "/".join(parts[1:])
        if tenant == "common" and rest == "discovery/instance":
            return self._instance_discovery(request, base_url)
        if tenant != self._scenario.tenant_id:
            return _error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        authority = f"{base_url}/{tenant}"
        if request.method == "GET" and rest == "v2.0/.well-known/openid-configuration":
            return json_response(200, self._openid_configuration(authority))
        if request.method == "GET" and rest == "discovery/v2.0/keys":
            return json_response(200, {"keys": []})
        if request.method == "POST" and rest == "oauth2/v2.0/token":
            return self._token(request.form(), authority)
        if request.method == "POST" and rest == "oauth2/v2.0/devicecode":
            return self._device_code(request.form(), base_url)
        return _error(404, "not_found", 90000, f"No endpoint {request.path}.")

    def _openid_configuration(self, authority: str) -> dict[str, object]:
        return {
            "issuer": f"{authority}/v2.0",
            "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
            "token_endpoint": f"{authority}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{authority}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{authority}/discovery/v2.0/keys",
            "end_session_endpoint": f"{authority}/oauth2/v2.0/logout",
            "response_types_supported": ["code", "id_token", "code id_token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "tenant_region_scope": "EU",
        }

    def _instance_discovery(self, request: Request, base_url: str) -> Response:
        host = base_url.removeprefix("https://")
        tenant = self._scenario.tenant_id
        return json_response(
            200,
            {
                "tenant_discovery_endpoint": f"{base_url}/{tenant}{_DISCOVERY}",
                "api-version": "1.1",
                "metadata": [
                    {
                        "preferred_network": host,
                        "preferred_cache": host,
                        "aliases": [host],
                    }
                ],
            },
        )

    # ----- token endpoint ---------------------------------------------

    def _token(self, form: dict[str, str], authority: str) -> Response:
        grant_type = form.get("grant_type", "")
        if form.get("client_id") != self._scenario.client_id:
            return _error(
                400,
                "unauthorized_client",
                700016,
                "Application was not found in the directory.",
            )
        if grant_type == "client_credentials":
            return self._client_credentials(form)
        if grant_type == DEVICE_CODE_GRANT:
            return self._device_grant(form, authority)
        if grant_type == "refresh_token":
            return self._refresh_grant(form, authority)
        return _error(
            400,
            "unsupported_grant_type",
            70003,
            f"The grant type '{grant_type}' is not supported.",
        )

    def _client_credentials(self, form: dict[str, str]) -> Response:
        secret_ok = form.get("client_secret") == self._scenario.client_secret
        if not secret_ok or self._faults.client_secret_rejected:
            return _error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being "
                "sent in the request is the client secret value.",
            )
        if not form.get("scope", "").endswith("/.default"):
            return _error(
                400,
                "invalid_scope",
                1002012,
                "The scope provided must end in /.default.",
            )
        token, lifetime = self._issue(form["client_id"], None, "client_credentials")
        return json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            },
        )

    def _device_grant(self, form: dict[str, str], authority: str) -> Response:
        with self._lock:
            flow = self._devices.get(form.get("device_code", ""))
            if flow is None:
                return _error(400, "invalid_grant", 70000, "Unknown device code.")
            if flow.expires_at <= self._clock():
                return _error(400, "expired_token", 70020, "The device code expired.")
            flow.polls += 1
            if flow.polls == 1:
                return _error(
                    400,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending.",
                )
            del self._devices[form["device_code"]]
        mailbox = self._faults.device_login_user or self._scenario.users[0].mailbox
        return self._user_tokens(
            flow.client_id, mailbox, flow.scope, authority, "device_code"
        )

    def _refresh_grant(self, form: dict[str, str], authority: str) -> Response:
        self._apply_revocations()
        with self._lock:
            stored = self._refresh.pop(form.get("refresh_token", ""), None)
        if stored is None:
            return _error(
                400,
                "invalid_grant",
                700082,
                "The refresh token has expired or been revoked.",
            )
        scope = form.get("scope") or stored.scope
        return self._user_tokens(
            stored.client_id, stored.mailbox, scope, authority, "refresh_token"
        )

    def _apply_revocations(self) -> None:
        revoked = self._faults.take_revocations()
        if not revoked:
            return
        with self._lock:
            for token, stored in list(self._refresh.items()):
                if None in revoked or stored.mailbox.lower() in revoked:
                    del self._refresh[token]

    def _user_tokens(
        self, client_id: str, mailbox: str, scope: str, authority: str, grant: str
    ) -> Response:
        token, lifetime = self._issue(client_id, mailbox, grant)
        refresh = secrets.token_urlsafe(48)
        with self._lock:
            self._refresh[refresh] = _RefreshToken(client_id, mailbox, scope)
        return json_response(
            200,
            {
                "token_type": "Bearer",
                "scope": scope,
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
                "refresh_token": refresh,
                "id_token": self._id_token(client_id, mailbox, authority),
                "client_info": _b64(
                    json.dumps(
                        {
                            "uid": user_object_id(mailbox),
                            "utid": self._scenario.tenant_id,
                        }
                    )
                ),
            },
        )

    def _issue(
        self, client_id: str, mailbox: str | None, grant: str
    ) -> tuple[str, int]:
        lifetime = self._scenario.settings.token_lifetime
        token = "eyJ0eXAiOiJKV1QiLCJzaW0iOnRydWV9." + secrets.token_urlsafe(48)
        expires = self._clock() + timedelta(seconds=lifetime)
        with self._lock:
            self._access[token] = Grant(client_id, mailbox, expires)
            self.issued[grant] = self.issued.get(grant, 0) + 1
        return token, lifetime

    def _id_token(self, client_id: str, mailbox: str, authority: str) -> str:
        now = int(self._clock().timestamp())
        user = self._scenario.user(mailbox)
        claims = {
            "iss": f"{authority}/v2.0",
            "aud": client_id,
            "sub": user_object_id(mailbox),
            "oid": user_object_id(mailbox),
            "tid": self._scenario.tenant_id,
            "preferred_username": mailbox,
            "name": user.name,
            "iat": now,
            "nbf": now,
            "exp": now + self._scenario.settings.token_lifetime,
        }
        header = {"alg": "none", "typ": "JWT"}
        return f"{_b64(json.dumps(header))}.{_b64(json.dumps(claims))}."

    # ----- device code endpoint ---------------------------------------

    def _device_code(self, form: dict[str, str], base_url: str) -> Response:
        if form.get("client_id") != self._scenario.client_id:
            return _error(
                400,
                "unauthorized_client",
                700016,
                "Application was not found in the directory.",
            )
        device_code = secrets.token_urlsafe(32)
        user_code = secrets.token_hex(4).upper()
        lifetime = 900
        with self._lock:
            self._devices[device_code] = _DeviceFlow(
                form["client_id"],
                form.get("scope", ""),
                user_code,
                self._clock() + timedelta(seconds=lifetime),
            )
        uri = f"{base_url}/devicelogin"
        return json_response(
            200,
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": uri,
                "expires_in": lifetime,
                "interval": self._scenario.settings.device_code_interval,
                "message": (
                    f"To sign in, use a web browser to open the page {uri} and "
                    f"enter the code {user_code} to authenticate. (The "
                    "simulator approves it by itself.)"
                ),
            },
        )


def user_object_id(mailbox: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"syncd-sim:user:{mailbox.lower()}"))


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _error(status: int, error: str, code: int, description: str) -> Response:
    trace = str(uuid.uuid4())
    return json_response(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace}",
            "error_codes": [code],
            "timestamp": "",
            "trace_id": trace,
            "correlation_id": str(uuid.uuid4()),
        },
    )
