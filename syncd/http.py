"""Shared HTTP plumbing for every outbound client (identity, Graph, InLoox).

One settings object holds the limits; one function retries.  Everything here
is generic: clients classify their own responses into the error tree of
:mod:`syncd.errors` and hand the idempotent ones to :func:`retry_idempotent`.

- :class:`HttpSettings`: timeouts, concurrency limits and the retry policy.
- :func:`ssl_context`: system CAs plus ``tls.ca_bundle``, for all HTTPS.
- :func:`httpx_timeout` / :func:`deadline`: per-phase timeouts and a total
  deadline per request.
- :class:`Limiter`: a global limit plus a limit per key (mailbox or host).
- :func:`parse_retry_after`: every form of ``Retry-After``.
- :func:`backoff_delay` / :func:`retry_idempotent`: capped exponential
  backoff with full jitter, for requests that are safe to repeat, and only
  for :class:`~syncd.errors.TransientError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import structlog

from syncd.errors import ConfigError, OutcomeUnknown, Problem, TransientError

log = structlog.get_logger(__name__)

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_TOTAL_TIMEOUT = 60.0
DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_PER_KEY_CONCURRENCY = 4
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BASE_DELAY = 0.5
DEFAULT_MAX_DELAY = 30.0


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Timeouts, concurrency limits and retry policy of one HTTP client.

    ``timeout`` bounds each read, write and pool wait; ``connect_timeout`` the
    connection set-up; ``total_timeout`` one whole request (all phases).
    ``per_key_concurrency`` limits requests in flight per mailbox (Graph) or
    per host (InLoox); ``max_concurrency`` across all keys.  A request is
    tried at most ``max_attempts`` times; the n-th retry waits a random time
    in ``[0, min(max_delay, base_delay * 2**(n-1))]`` unless the server said
    how long (``Retry-After``).  A server asking for more than ``max_delay``
    is not retried in-line: the error goes to the caller, which pauses.
    """

    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    per_key_concurrency: int = DEFAULT_PER_KEY_CONCURRENCY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY


def httpx_timeout(settings: HttpSettings) -> httpx.Timeout:
    """The per-phase httpx timeouts (connect, read, write, pool) of ``settings``."""
    return httpx.Timeout(settings.timeout, connect=settings.connect_timeout)


def httpx_limits(settings: HttpSettings) -> httpx.Limits:
    """Connection pool limits matching the global concurrency limit."""
    return httpx.Limits(
        max_connections=settings.max_concurrency,
        max_keepalive_connections=settings.max_concurrency,
    )


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """A verifying TLS context: the system CAs plus the PEM bundle, if any.

    The extra bundle is trusted for every outbound HTTPS connection (identity
    platform, Graph, InLoox).  A bundle that cannot be read is a
    configuration problem of ``tls.ca_bundle``.
    """
    return _ssl_context(str(ca_bundle) if ca_bundle is not None else None)


@functools.lru_cache(maxsize=8)
def _ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_bundle is None:
        return context

    try:
        context.load_verify_locations(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        problem = Problem(file=ca_bundle, line=None, key="tls.ca_bundle",
                          message=f"cannot load the CA bundle: {exc}")
        raise ConfigError([problem]) from exc
    return context


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or ``None``.

    Accepts integer or fractional seconds and an HTTP date (relative to
    ``now``, aware UTC; a date in the past means 0).  Anything else, a
    negative number included, is ignored (``None``).
    """
    if value is None or not value.strip():
        return None

    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _retry_after_date(text, now)
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    return seconds


def _retry_after_date(text: str, now: datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, settings: HttpSettings,
                  rng: random.Random | None = None) -> float:
    """Capped exponential backoff with full jitter for retry number ``attempt``.

    ``attempt`` counts from 1 (the first retry).  The result is uniform in
    ``[0, min(max_delay, base_delay * 2**(attempt-1))]``.
    """
    exponent = min(max(attempt - 1, 0), 62)
    cap = min(settings.max_delay, settings.base_delay * (2 ** exponent))
    return (rng or random).uniform(0.0, cap)


def retry_delay(error: TransientError, attempt: int, settings: HttpSettings,
                rng: random.Random | None = None) -> float:
    """How long to wait before retry ``attempt``: the server's hint, else backoff."""
    if error.retry_after is not None:
        return error.retry_after
    return backoff_delay(attempt, settings, rng)


async def retry_idempotent(
    fn: Callable[[], Awaitable[T]],
    settings: HttpSettings,
    *,
    what: str,
    sleep: Sleep = asyncio.sleep,
    log: Any = log,
    rng: random.Random | None = None,
    **fields: object,
) -> T:
    """Call ``fn`` until it succeeds, retrying only transient failures.

    The one place syncd retries a request by itself.  Use it only for
    requests that are safe to repeat (GET, PUT/DELETE of a known resource):
    ``OutcomeUnknown`` (a write that may have happened) is never retried.
    Each retry is logged at WARNING as ``http_retry`` with ``what``, the
    attempt number, the delay and ``fields``.  After ``max_attempts`` tries,
    or when the server asks for a longer pause than ``max_delay``, the last
    error is raised.
    """
    attempt = 1
    while True:
        try:
            return await fn()
        except OutcomeUnknown:
            raise
        except TransientError as exc:
            delay = retry_delay(exc, attempt, settings, rng)
            if attempt >= settings.max_attempts or delay > settings.max_delay:
                raise

            log.warning("http_retry", what=what, attempt=attempt, delay=round(delay, 3),
                        error=type(exc).__name__, status=exc.status, **fields)
            await sleep(delay)
            attempt += 1


@contextlib.asynccontextmanager
async def deadline(seconds: float, *, what: str, method: str | None = None,
                   url: str | None = None) -> AsyncIterator[None]:
    """Bound a whole request; overrunning raises ``TransientError``."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise TransientError(f"{what}: no answer within {seconds:g}s",
                             method=method, url=url) from exc


def transport_error(exc: httpx.TransportError, *, what: str, method: str,
                    url: str) -> TransientError:
    """The transient error for a failed exchange (connect, read, TLS, ...).

    An untrusted server certificate says which setting usually fixes it.
    """
    kind = type(exc).__name__
    if _caused_by(exc, ssl.SSLCertVerificationError):
        return TransientError(f"{what}: {kind}: server certificate not trusted "
                              "(check tls.ca_bundle)", method=method, url=url)
    return TransientError(f"{what}: {kind}", method=method, url=url)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def same_origin(link: str, base_url: str) -> bool:
    """Whether ``link`` has the scheme, host and port of ``base_url``.

    Links a server sends back are followed with credentials attached, so
    they are followed only to the service they came from.
    """
    try:
        return origin(httpx.URL(link)) == origin(httpx.URL(base_url))
    except httpx.InvalidURL:
        return False


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """The scheme, host and port of a parsed URL: what :func:`same_origin`
    compares, for callers that keep the parsed URL to send it."""
    return url.scheme, url.host, url.port


def odata_error(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(code, message)`` of an OData/Graph error body, ``None`` when absent."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    return (code if isinstance(code, str) else None,
            message if isinstance(message, str) else None)


class Limiter:
    """At most ``per_key`` requests in flight per key and ``total`` overall.

    Keys are mailboxes (Graph) or hosts (InLoox).  Semaphores bind to the
    event loop that first waits on them: make one limiter per loop.
    """

    def __init__(self, total: int, per_key: int) -> None:
        self._total = asyncio.Semaphore(total)
        self._per_key_limit = per_key
        self._per_key: dict[str, asyncio.Semaphore] = {}

    @classmethod
    def from_settings(cls, settings: HttpSettings) -> Limiter:
        return cls(settings.max_concurrency, settings.per_key_concurrency)

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Hold one slot for ``key`` (taken before the global one)."""
        per_key = self._per_key.get(key)
        if per_key is None:
            per_key = self._per_key.setdefault(
                key, asyncio.Semaphore(self._per_key_limit))
        async with per_key, self._total:
            yield
