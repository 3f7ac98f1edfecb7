"""Redaction with thousands of registered secrets: complete, and cheap."""

from __future__ import annotations

import secrets
import time

from syncd.redact import redact_text, register_secret


def _value() -> str:
    return secrets.token_hex(10)


def test_every_one_of_thousands_of_secrets_is_masked() -> None:
    """With 5,000 registered keys, each one is masked wherever it is."""
    keys = [f"ilx_pat_{_value()}" for _ in range(5000)]
    for key in keys:
        register_secret(key)

    masked = [redact_text(f"sent {key} to {key[:-1]}!") for key in keys[::97]]

    assert masked == [f"sent *** to {key[:-1]}!" for key in keys[::97]]


def test_overlapping_secrets_leave_no_part_behind() -> None:
    """A secret inside, across or next to another: the whole stretch is masked."""
    core = _value()
    longer, across = f"{core}-long", f"x{core[:8]}"
    for value in (longer, across):
        register_secret(value)

    assert redact_text(f"<{across[0]}{longer}>") == "<***>"
    assert redact_text(f"<{longer}{longer}>") == "<******>"
    assert redact_text(f"<{across}>") == "<***>"


def test_a_secret_overlapping_itself_is_masked_whole() -> None:
    """``abab`` in ``ababab``: no trailing half is left readable."""
    half = _value()[:6]
    register_secret(half + half)

    assert redact_text(f"[{half}{half}{half}]") == "[***]"


def test_text_without_secrets_costs_the_same_with_many_registered() -> None:
    """A log string is scanned once, not once per secret: 10,000 secrets
    registered, 2,000 ordinary strings still take well under a second."""
    for _ in range(10_000):
        register_secret(_value())
    line = "pass_finished alice@contoso.example AAMkAGI2TGuLAAA= booked=3"

    started = time.perf_counter()
    for _ in range(2000):
        assert redact_text(line) == line
    elapsed = time.perf_counter() - started

    assert elapsed < 1.0
