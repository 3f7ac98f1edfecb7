"""Redaction: no token, secret, API key, Authorization header or body in any line."""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
from collections.abc import Iterator

import pytest
import structlog

from syncd.logs import Format, configure_logging
from syncd.redact import redact_text, register_secret


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_syncd_handler", False)]:
        root.removeHandler(handler)


def _jwt() -> str:
    """A JWT-shaped token made at run time, so it is in no source line."""

    def part(data: dict[str, object]) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header = part({"alg": "RS256", "typ": "JWT"})
    claims = part({"oid": secrets.token_hex(8), "aud": "https://graph.example"})
    return f"{header}.{claims}.{secrets.token_urlsafe(32)}"


def _secret(name: str) -> str:
    return f"{name}-{secrets.token_hex(12)}"


def _fail_with(client_secret: str, api_key: str) -> None:
    """Raise with a secret in a local variable and in the message."""
    credentials = {"client_secret": client_secret, "api_key": api_key}
    assert credentials
    raise RuntimeError(f"token request rejected for secret {client_secret}")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_nothing_secret_reaches_any_line(fmt: Format) -> None:
    """Keys, headers, tokens, bodies and tracebacks are masked at every level."""
    client_secret = _secret("graph")
    api_key = _secret("inloox")
    refresh = _secret("refresh")
    jwt = _jwt()
    state = _secret("deltastate")
    body_text = _secret("quarterly figures for the board")
    register_secret(client_secret)
    register_secret(api_key)
    stream = io.StringIO()
    configure_logging(stream=stream, level="debug", fmt=fmt)
    log = structlog.get_logger("syncd.test")
    stdlib = logging.getLogger("syncd.stdlib")

    log.debug("token_acquired", access_token=jwt, refresh_token=refresh)
    headers = {"Authorization": f"Bearer {jwt}", "x-api-key": api_key}
    log.info("request", headers=headers)
    log.info("request_sent", line=f"x-api-key: {api_key}", note=f"auth Bearer {jwt}")
    log.warning("form", data=f"grant_type=client_credentials&client_secret={refresh}")
    log.warning("event_seen", body={"contentType": "html", "content": body_text})
    log.warning("event_body", content=body_text, bodyPreview=body_text)
    log.error("delta", link=f"https://graph.example/delta?$deltatoken={state}&x=1")
    stdlib.warning("GET https://graph.example/delta?$skiptoken=%s", state)
    stdlib.info("secret in prose: %s", client_secret)
    try:
        _fail_with(client_secret, api_key)
    except RuntimeError:
        log.exception("token_failed")
        stdlib.exception("stdlib saw %s", jwt)
    log.critical("config_echo", value=[client_secret, (api_key,), {"deep": jwt}])

    output = stream.getvalue()
    for value in (client_secret, api_key, refresh, jwt, state, body_text):
        assert value not in output
    for part in jwt.split("."):
        assert part not in output
    assert "token_failed" in output
    assert "Traceback" in output
    assert "credentials = " not in output  # locals are never rendered


def test_masked_text_keeps_its_shape() -> None:
    """Masking keeps the surrounding text, so a line stays useful."""
    masked = redact_text("Authorization: Bearer abc.def-123")

    assert masked == "Authorization: Bearer ***"
    assert redact_text("x-api-key: k3y-value rest") == "x-api-key: *** rest"
    assert redact_text("a?$deltatoken=s1&$top=5") == "a?$deltatoken=***&$top=5"
    assert redact_text("client_secret=abc&scope=x") == "client_secret=***&scope=x"
    assert redact_text("postgresql+psycopg://syncd:pw@db/l") == (
        "postgresql+psycopg://syncd:***@db/l"
    )


def test_registered_secret_masked_inside_words() -> None:
    """A registered secret is replaced wherever it appears in a string."""
    value = _secret("pat")
    register_secret(value)

    assert redact_text(f"prefix{value}suffix") == "prefix***suffix"


def test_short_values_are_not_registered() -> None:
    """Secrets of fewer than four characters are ignored to spare words."""
    register_secret("abc")

    assert redact_text("abc def") == "abc def"


def test_ordinary_fields_are_kept() -> None:
    """Mailboxes, event ids and counts pass through untouched."""
    stream = io.StringIO()
    configure_logging(stream=stream, fmt="json")

    structlog.get_logger("syncd").info(
        "pass_finished", user="alice@contoso.example", booked=3, event_id="AAMk="
    )

    line = json.loads(stream.getvalue())
    assert line["user"] == "alice@contoso.example"
    assert line["booked"] == 3
    assert line["event_id"] == "AAMk="
