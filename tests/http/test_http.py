"""syncd.http: settings, TLS trust, Retry-After, backoff and the one retry loop."""

from __future__ import annotations

import asyncio
import random
import ssl
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
import trustme

from syncd.errors import ConfigError, OutcomeUnknown, PermanentError, TransientError
from syncd.http import (
    HttpSettings,
    Limiter,
    backoff_delay,
    deadline,
    httpx_timeout,
    parse_retry_after,
    retry_idempotent,
    ssl_context,
)

NOW = datetime(2025, 1, 15, 9, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 7 ", 7.0),
        ("Wed, 15 Jan 2025 09:00:30 GMT", 30.0),
        ("Wed, 15 Jan 2025 08:59:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
        ("nan", None),
    ],
)
def test_parse_retry_after_every_form(
    header: str | None, expected: float | None,
) -> None:
    """Retry-After in seconds, fractional seconds or an HTTP date; junk is ignored."""
    assert parse_retry_after(header, NOW) == expected


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    """Retry n waits between 0 and min(max_delay, base * 2**(n-1))."""
    settings = HttpSettings(base_delay=1.0, max_delay=5.0)
    rng = random.Random(7)

    caps = {1: 1.0, 2: 2.0, 3: 4.0, 4: 5.0, 10: 5.0, 200: 5.0}
    for attempt, cap in caps.items():
        delays = [backoff_delay(attempt, settings, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8


def test_httpx_timeout_carries_connect_and_read() -> None:
    """Connect and read/write/pool timeouts come from the settings."""
    timeout = httpx_timeout(HttpSettings(timeout=12.0, connect_timeout=3.0))

    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (
        3.0, 12.0, 12.0, 12.0)


def test_ssl_context_trusts_the_extra_bundle_and_system(tmp_path: Path) -> None:
    """The extra bundle adds to the system CAs; it does not replace them."""
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]

    context = ssl_context(bundle)

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == system + 1


def test_ssl_context_unreadable_bundle_is_a_config_problem(tmp_path: Path) -> None:
    """A missing CA bundle names tls.ca_bundle."""
    with pytest.raises(ConfigError) as caught:
        ssl_context(tmp_path / "missing.pem")

    assert caught.value.problems[0].key == "tls.ca_bundle"


class Flaky:
    """Fails with the given errors, then returns 'ok'."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


SETTINGS = HttpSettings(max_attempts=3, base_delay=1.0, max_delay=10.0)


def test_retry_idempotent_retries_transient_and_logs_each_retry() -> None:
    """Two transient failures, then success: two WARNING http_retry lines."""
    fn, sleeps = Flaky(TransientError("a"), TransientError("b")), Sleeps()

    with structlog.testing.capture_logs() as logs:
        result = asyncio.run(retry_idempotent(
            fn, SETTINGS, what="test", sleep=sleeps, rng=random.Random(1)))

    assert result == "ok"
    assert fn.calls == 3
    retries = [e for e in logs if e["event"] == "http_retry"]
    assert [(e["log_level"], e["attempt"]) for e in retries] == [
        ("warning", 1), ("warning", 2)]
    assert all(0 <= d <= 2.0 for d in sleeps.delays)


def test_retry_idempotent_honours_retry_after() -> None:
    """A server hint replaces the backoff delay."""
    fn, sleeps = Flaky(TransientError("busy", retry_after=2.5)), Sleeps()

    asyncio.run(retry_idempotent(fn, SETTINGS, what="test", sleep=sleeps))

    assert sleeps.delays == [2.5]


def test_retry_idempotent_gives_up_after_max_attempts() -> None:
    """The last transient error is raised after max_attempts tries."""
    fn = Flaky(*(TransientError(str(i)) for i in range(5)))

    with pytest.raises(TransientError, match="2"):
        asyncio.run(retry_idempotent(fn, SETTINGS, what="test", sleep=Sleeps()))

    assert fn.calls == 3


def test_retry_idempotent_long_retry_after_goes_to_the_caller() -> None:
    """A pause longer than max_delay is not waited out in-line."""
    fn = Flaky(TransientError("throttled", retry_after=60.0))

    with pytest.raises(TransientError):
        asyncio.run(retry_idempotent(fn, SETTINGS, what="test", sleep=Sleeps()))

    assert fn.calls == 1


@pytest.mark.parametrize("error", [OutcomeUnknown("sent"), PermanentError("no")])
def test_retry_idempotent_never_retries_unknown_outcome_or_permanent(
    error: Exception,
) -> None:
    """OutcomeUnknown and non-transient errors are raised at once."""
    fn = Flaky(error)

    with pytest.raises(type(error)):
        asyncio.run(retry_idempotent(fn, SETTINGS, what="test", sleep=Sleeps()))

    assert fn.calls == 1


def test_deadline_turns_overrun_into_transient_error() -> None:
    """A request that outlives its total deadline is a TransientError."""

    async def hang() -> None:
        async with deadline(0.01, what="test", method="GET", url="https://x/y?t=1"):
            await asyncio.sleep(5)

    with pytest.raises(TransientError) as caught:
        asyncio.run(hang())

    assert "?t=1" not in str(caught.value)


def test_limiter_bounds_per_key_and_total() -> None:
    """At most per_key in flight for one key, at most total overall."""
    limiter = Limiter(total=3, per_key=2)
    in_flight: dict[str, int] = {"a": 0, "b": 0}
    peaks = {"a": 0, "b": 0, "all": 0}

    async def one(key: str) -> None:
        async with limiter.slot(key):
            in_flight[key] += 1
            peaks[key] = max(peaks[key], in_flight[key])
            peaks["all"] = max(peaks["all"], sum(in_flight.values()))
            await asyncio.sleep(0.001)
            in_flight[key] -= 1

    async def main() -> None:
        await asyncio.gather(*(one(k) for k in "aaaaaabbbbbb"))

    asyncio.run(main())

    assert peaks == {"a": 2, "b": 2, "all": 3}
