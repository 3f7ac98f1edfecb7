"""Graph access tokens through msal: app-only and delegated (device code).

- :class:`ClientCredentialsAuth`: one app-only token (client secret) for every
  mailbox, cached in memory by msal.
- :class:`DeviceCodeAuth`: a signed-in user (``syncd login``); the msal cache
  lives in a 0600 file that is rewritten atomically whenever it changed (the
  refresh token rotates on every refresh).

msal is synchronous: acquisitions run in a worker thread, one at a time per
provider.  msal talks HTTP through :class:`MsalHttpClient`, so it shares the
TLS trust (``tls.ca_bundle`` plus the system CAs), timeouts and metrics of
every other client.  msal itself is imported lazily: ``syncd --help`` must not
pay for it.  No token ever reaches a log call.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

import httpx
import structlog

from syncd.errors import AuthError, ConfigError, Problem, SyncdError, TransientError
from syncd.http import HttpSettings, httpx_timeout, ssl_context, transport_error
from syncd.metrics import GRAPH_REQUESTS

if TYPE_CHECKING:
    import msal  # type: ignore[import-untyped, unused-ignore]

log = structlog.get_logger(__name__)

GRAPH_APP_SCOPE = "https://graph.microsoft.com/.default"
GRAPH_DELEGATED_SCOPES = ("https://graph.microsoft.com/Calendars.Read",)
MICROSOFT_AUTHORITY_HOST = "login.microsoftonline.com"

TOKEN_REUSE_MARGIN = 600.0
"""Seconds before expiry an app-only token stops being reused without msal."""
FIX_SECRET = "check graph.client_id and graph.client_secret"
FIX_LOGIN = "run `syncd login -c FILE --user {mailbox}`"
FIX_AUTHORITY = "check graph.authority"

_REJECTED = frozenset({"invalid_client", "unauthorized_client", "invalid_grant"})
_TRANSIENT = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
_AADSTS = re.compile(r"AADSTS\d+")


class TokenProvider(Protocol):
    """What a Graph client needs from auth: a token, and a way to drop one."""

    async def get_token(self, mailbox: str) -> str: ...

    def invalidate(self, token: str) -> None: ...


class MsalHttpClient:
    """msal's ``http_client``: httpx with syncd's TLS context and timeouts.

    Network failures become ``TransientError``; every exchange is counted in
    ``syncd_graph_requests_total``.  Request and response bodies (they carry
    secrets and tokens) are never logged.
    """

    def __init__(self, *, ca_bundle: Path | None = None,
                 settings: HttpSettings | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        settings = settings or HttpSettings()
        self._client = httpx.Client(
            verify=ssl_context(ca_bundle), timeout=httpx_timeout(settings),
            transport=transport, follow_redirects=False)

    def get(self, url: str, params: Mapping[str, Any] | None = None,
            headers: Mapping[str, str] | None = None, **_: Any) -> httpx.Response:
        return self._send("GET", url, params=params, headers=headers)

    def post(self, url: str, params: Mapping[str, Any] | None = None,
             data: Any = None, headers: Mapping[str, str] | None = None,
             **_: Any) -> httpx.Response:
        content = data if isinstance(data, str | bytes) else None
        form = data if isinstance(data, Mapping) else None
        return self._send("POST", url, params=params, headers=headers,
                          content=content, data=form)

    def close(self) -> None:
        self._client.close()

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            GRAPH_REQUESTS.labels(status="error").inc()
            raise transport_error(exc, what="identity platform", method=method,
                                  url=url) from exc
        GRAPH_REQUESTS.labels(status=str(response.status_code)).inc()
        return response


def default_instance_discovery(authority: str) -> bool | None:
    """msal's instance discovery only makes sense against Microsoft's own host."""
    host = urlparse(authority).hostname or ""
    return None if host.lower() == MICROSOFT_AUTHORITY_HOST else False


def _check_authority(authority: str) -> None:
    """msal needs https: anything else is a configuration mistake."""
    if urlparse(authority).scheme != "https":
        raise ConfigError([Problem(file="", line=None, key="graph.authority",
                                   message="must be an https:// URL")])


def raise_for_result(result: Mapping[str, Any], *, fix: str,
                     user: str | None = None) -> None:
    """Turn an msal error result into ``AuthError`` or ``TransientError``.

    Rejected credentials (bad secret, unknown client, rejected refresh token)
    pause the user with advice naming what to fix; outages are transient.
    """
    error = str(result.get("error", ""))
    if not error:
        return

    description = str(result.get("error_description", ""))
    aadsts = _AADSTS.search(description)
    code = aadsts.group(0) if aadsts else error
    codes = result.get("error_codes") or []
    if error in _TRANSIENT:
        raise TransientError(f"identity platform unavailable: {code}", code=error,
                             user=user)
    if error in _REJECTED or 7000215 in codes:
        raise AuthError(f"identity platform rejected the credentials ({code}): {fix}",
                        code=error, user=user)
    raise AuthError(f"identity platform refused the token request ({code}): {fix}",
                    code=error, user=user)


def _classify_msal_exception(exc: Exception, *,
                             user: str | None) -> SyncdError | None:
    """Map network and msal failures onto the error tree; None for anything else.

    Transport errors (httpx, requests), an answer that is not JSON and msal's
    own service errors are transient; an ID token for another issuer or
    audience means the authority is wrong.  Anything else is a bug and must
    surface as itself.
    """
    import msal  # type: ignore[import-untyped, unused-ignore]
    import requests  # type: ignore[import-untyped, unused-ignore]
    from msal.oauth2cli.oidc import (  # type: ignore[import-untyped, unused-ignore]
        IdTokenError,
    )

    if isinstance(exc, SyncdError):
        return exc
    if isinstance(exc, IdTokenError):
        return AuthError(f"identity platform sent an unexpected ID token "
                         f"({type(exc).__name__}): {FIX_AUTHORITY}", user=user)
    network = (httpx.TransportError, requests.RequestException, json.JSONDecodeError,
               msal.exceptions.MsalError)
    if isinstance(exc, network):
        return TransientError(
            f"identity platform exchange failed: {type(exc).__name__}", user=user)
    return None


@contextmanager
def _msal_errors(user: str | None) -> Iterator[None]:
    """Re-raise network and msal failures classified; let anything else through."""
    try:
        yield
    except Exception as exc:
        mapped = _classify_msal_exception(exc, user=user)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc


class _MsalProvider:
    """The shared part: lazy msal app, one acquisition at a time, invalidation."""

    def __init__(self, authority: str, client_id: str, *, ca_bundle: Path | None,
                 http_client: Any, settings: HttpSettings | None,
                 instance_discovery: bool | str | None) -> None:
        _check_authority(authority)
        self._authority = authority
        self._client_id = client_id
        self._http_client = http_client or MsalHttpClient(
            ca_bundle=ca_bundle, settings=settings)
        self._instance_discovery = (default_instance_discovery(authority)
                                    if instance_discovery == "auto"
                                    else instance_discovery)
        self._lock = threading.Lock()
        self._app: Any = None
        self._invalidated: set[str] = set()

    def close(self) -> None:
        """Close the HTTP connections msal used (the token cache stays)."""
        close = getattr(self._http_client, "close", None)
        if close is not None:
            close()

    def _msal_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"authority": self._authority,
                                  "http_client": self._http_client}
        if self._instance_discovery is False:
            kwargs["instance_discovery"] = False
        return kwargs

    def _build_app(self) -> Any:
        raise NotImplementedError

    def _ensure_app(self) -> Any:
        """Build the msal app (OIDC discovery goes over the network)."""
        if self._app is not None:
            return self._app

        try:
            self._app = self._build_app()
        except ValueError as exc:
            raise AuthError(f"identity platform discovery failed: {FIX_AUTHORITY}",
                            url=self._authority) from exc
        return self._app

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (Graph said 401): the next acquisition fetches anew.

        Never blocks: the token is dropped from msal's cache by the next
        acquisition, in the worker thread.
        """
        self._invalidated.add(token)

    def _drop_invalidated(self) -> None:
        """Remove invalidated tokens from msal's cache (holding ``_lock``)."""
        if not self._invalidated or self._app is None:
            return

        tokens, self._invalidated = self._invalidated, set()
        cache = self._app.token_cache
        stale = [entry for entry in cache.search("AccessToken")
                 if entry.get("secret") in tokens]
        for entry in stale:
            cache.remove_at(entry)
        log.info("token_invalidated", count=len(tokens))


class ClientCredentialsAuth(_MsalProvider):
    """App-only Graph tokens (client credentials), the same for every mailbox."""

    def __init__(self, authority: str, client_id: str, client_secret: str, *,
                 ca_bundle: Path | None = None, http_client: Any = None,
                 settings: HttpSettings | None = None,
                 instance_discovery: bool | str | None = "auto",
                 scope: str = GRAPH_APP_SCOPE) -> None:
        super().__init__(authority, client_id, ca_bundle=ca_bundle,
                         http_client=http_client, settings=settings,
                         instance_discovery=instance_discovery)
        self._secret = client_secret
        self._scopes = [scope]
        self._served: tuple[str, float] | None = None
        """The token msal last served from its cache, and until when (Unix
        time) msal would serve it again: a request before then needs neither
        msal nor a worker thread (the thread cost several times the lookup)."""
        self._invalidations = 0

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(authority={self._authority!r})"

    def _build_app(self) -> msal.ConfidentialClientApplication:
        import msal  # type: ignore[import-untyped, unused-ignore]

        return msal.ConfidentialClientApplication(
            self._client_id, client_credential=self._secret, **self._msal_kwargs())

    async def get_token(self, mailbox: str) -> str:
        """An app-only access token (msal serves it from its cache when valid)."""
        served = self._served
        if served is not None and time.time() < served[1]:
            return served[0]

        invalidations = self._invalidations
        token, reusable_until = await asyncio.to_thread(self._acquire, mailbox)
        if reusable_until is not None and invalidations == self._invalidations:
            self._served = (token, reusable_until)
        return token

    def invalidate(self, token: str) -> None:
        self._served = None
        self._invalidations += 1
        super().invalidate(token)

    def _acquire(self, mailbox: str) -> tuple[str, float | None]:
        with self._lock, _msal_errors(mailbox):
            app = self._ensure_app()
            self._drop_invalidated()
            result = app.acquire_token_for_client(scopes=self._scopes)
        raise_for_result(result, fix=FIX_SECRET, user=mailbox)
        return str(result["access_token"]), _reusable_until(result, time.time())


def _reusable_until(result: Mapping[str, Any], now: float) -> float | None:
    """Until when msal would answer from its cache with this token again.

    Only a token msal served from its cache says so (``expires_in`` and, for
    a token msal refreshes early, ``refresh_on``).  ``TOKEN_REUSE_MARGIN``
    is more than msal's own (it refreshes 5 minutes before expiry), so a
    token reused here is always one msal would still serve.
    """
    if result.get("token_source") != "cache":
        return None
    expires_in = result.get("expires_in")
    if not isinstance(expires_in, int):
        return None
    until = now + expires_in - TOKEN_REUSE_MARGIN
    refresh_on = result.get("refresh_on")
    if isinstance(refresh_on, int | float):
        until = min(until, float(refresh_on))
    return until


class DeviceCodeAuth(_MsalProvider):
    """Delegated Graph tokens of a user who signed in with the device code flow.

    The msal cache is a JSON file created 0600, replaced atomically after
    every acquisition that changed it, and re-read when another process (a
    later ``syncd login``) replaced it.  A cache that cannot be parsed is moved
    aside as ``<file>.corrupt-<timestamp>`` and the user must sign in again.
    """

    def __init__(self, authority: str, client_id: str, *, token_cache: Path,
                 ca_bundle: Path | None = None, http_client: Any = None,
                 settings: HttpSettings | None = None,
                 instance_discovery: bool | str | None = "auto",
                 scopes: tuple[str, ...] = GRAPH_DELEGATED_SCOPES,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        super().__init__(authority, client_id, ca_bundle=ca_bundle,
                         http_client=http_client, settings=settings,
                         instance_discovery=instance_discovery)
        self._path = Path(token_cache)
        self._scopes = list(scopes)
        self._now = now
        self._cache: Any = None
        self._cache_stamp: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"DeviceCodeAuth(authority={self._authority!r}, cache={self._path})"

    def _build_app(self) -> msal.PublicClientApplication:
        import msal  # type: ignore[import-untyped, unused-ignore]

        return msal.PublicClientApplication(
            self._client_id, token_cache=self._cache, **self._msal_kwargs())

    def login(self, print_fn: Callable[[str], None] = print, *,
              mailbox: str | None = None) -> str:
        """Run the device code flow; return the signed-in username.

        ``print_fn`` receives the verification URI and the user code (never a
        token).  Blocks until the user approved, the code expired or the
        platform refused.  With ``mailbox``, the account must be that user;
        a refused sign-in leaves the cache (file and memory) as it was.
        """
        with self._lock:
            app = self._prepare(mailbox)
            flow = self._initiate(app, mailbox)
            print_fn(_flow_message(flow))
            before = self._cache.serialize()
            with _msal_errors(mailbox):
                result = app.acquire_token_by_device_flow(flow)
            try:
                username = _signed_in_username(result, mailbox)
            except (AuthError, TransientError):
                self._cache.deserialize(before)
                self._cache.has_state_changed = False
                raise
            self._save_if_changed()
        log.info("login_succeeded", username=username, cache=str(self._path))
        return username

    def _initiate(self, app: Any, mailbox: str | None) -> dict[str, Any]:
        with _msal_errors(mailbox):
            flow: dict[str, Any] = app.initiate_device_flow(scopes=self._scopes)
        if "user_code" not in flow:
            raise_for_result(flow, fix=FIX_AUTHORITY, user=mailbox)
        return flow

    async def get_token(self, mailbox: str) -> str:
        """A delegated token for the signed-in ``mailbox`` (silent refresh)."""
        return await asyncio.to_thread(self._acquire, mailbox)

    def _acquire(self, mailbox: str) -> str:
        with self._lock:
            app = self._prepare(mailbox)
            self._drop_invalidated()
            accounts = app.get_accounts(username=mailbox)
            if not accounts:
                raise AuthError(f"no signed-in account for {mailbox}: "
                                f"{_fix_login(mailbox)}", user=mailbox)
            with _msal_errors(mailbox):
                result = app.acquire_token_silent_with_error(
                    self._scopes, account=accounts[0])
            self._save_if_changed()
        if result is None:
            raise AuthError(f"the sign-in of {mailbox} expired: {_fix_login(mailbox)}",
                            user=mailbox)
        raise_for_result(result, fix=_fix_login(mailbox), user=mailbox)
        return str(result["access_token"])

    def _prepare(self, mailbox: str | None) -> Any:
        """Load (or reload) the cache file, then make sure the app exists."""
        with _msal_errors(mailbox):
            self._load_if_replaced()
            return self._ensure_app()

    # -- the cache file --------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_ino

    def _load_if_replaced(self) -> None:
        stamp = self._stamp()
        if self._cache is not None and stamp == self._cache_stamp:
            return

        import msal  # type: ignore[import-untyped, unused-ignore]

        cache = self._cache
        if cache is None:
            cache = msal.SerializableTokenCache()
        state = self._read_state()
        cache.deserialize(state)
        cache.has_state_changed = False
        self._cache, self._cache_stamp = cache, self._stamp()

    def _read_state(self) -> str | None:
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return None
        self._make_private()
        try:
            text = raw.decode("utf-8")
            _check_cache_shape(json.loads(text))
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError too
            self._move_aside(exc)
            return None
        return text

    def _make_private(self) -> None:
        """A cache readable by others is narrowed to 0600, with one warning."""
        try:
            mode = stat.S_IMODE(self._path.stat().st_mode)
            if not mode & 0o077:
                return
            os.chmod(self._path, 0o600)
        except OSError as exc:  # gone meanwhile, or not ours to change
            log.warning("token_cache_mode_unchecked", cache=str(self._path),
                        error=type(exc).__name__)
            return
        log.warning("token_cache_mode_loose", cache=str(self._path),
                    mode=f"{mode:04o}", fixed_to="0600")

    def _move_aside(self, exc: Exception) -> None:
        stamp = self._now().strftime("%Y%m%dT%H%M%SZ")
        aside = self._path.with_name(f"{self._path.name}.corrupt-{stamp}")
        os.replace(self._path, aside)
        log.warning("token_cache_corrupt", cache=str(self._path), moved_to=str(aside),
                    error=type(exc).__name__)

    def _save_if_changed(self) -> None:
        if self._cache is None or not self._cache.has_state_changed:
            return

        write_private_file(self._path, self._cache.serialize())
        self._cache.has_state_changed = False
        self._cache_stamp = self._stamp()


def _signed_in_username(result: Mapping[str, Any], mailbox: str | None) -> str:
    """The username of a device-flow result; with ``mailbox``, it must match."""
    raise_for_result(result, fix=_fix_login(mailbox), user=mailbox)
    claims = result.get("id_token_claims") or {}
    username = str(claims.get("preferred_username", ""))
    if mailbox and username.lower() != mailbox.lower():
        raise AuthError(f"signed in as {username or 'an unknown account'}, "
                        f"not as {mailbox}: {_fix_login(mailbox)}", user=mailbox)
    return username


def _check_cache_shape(state: object) -> None:
    """msal's cache is an object of sections, each an object of objects."""
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    for section in state.values():
        if not isinstance(section, dict) or not all(
                isinstance(entry, dict) for entry in section.values()):
            raise ValueError("a section is not an object of objects")


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older temp file may have had a wider mode
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


def _fix_login(mailbox: str | None) -> str:
    return FIX_LOGIN.format(mailbox=mailbox or "M")


def _flow_message(flow: Mapping[str, Any]) -> str:
    uri = flow.get("verification_uri") or flow.get("verification_url", "")
    return (f"To sign in, open {uri} and enter the code {flow['user_code']}"
            f" (valid for {int(flow.get('expires_in', 900)) // 60} minutes).")
