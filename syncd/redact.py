"""Masking secrets in text: registered values and token-looking substrings.

Kept apart from :mod:`syncd.logs` (structlog) so that configuration loading
and the command line can mask without importing the logging stack.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

MASK = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer <token> / Basic <credentials>
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/=]{4,}"), r"\1\2" + MASK),
    # JSON Web Tokens (msal id tokens, Graph access tokens)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK),
    # header-ish pairs: "x-api-key: …", "'Authorization': '…'", "cookie=…"
    (
        re.compile(
            r"(?i)\b(x-api-key|api[-_]?key|authorization|cookie)"
            r"(['\"]?\s*[:=]\s*['\"]?)(?!\*\*\*|(?:bearer|basic)\s)[^'\"\s,;&}]+"
        ),
        r"\1\2" + MASK,
    ),
    # form and query parameters of the identity platform
    (
        re.compile(
            r"(?i)\b(client_secret|client_assertion|password|refresh_token"
            r"|access_token|id_token|device_code)=[^&\s'\"]+"
        ),
        r"\1=" + MASK,
    ),
    # passwords in URLs: postgresql+psycopg://user:password@host/db
    (re.compile(r"([A-Za-z][\w+.-]*://[^:/\s@]+:)[^@\s/]+@"), r"\1" + MASK + "@"),
    # Graph delta and skip state tokens in links
    (re.compile(r"(?i)((?:\$|%24)(?:deltatoken|skiptoken)=)[^&\s'\"]+"), r"\1" + MASK),
)

_TRIGGER_WORDS = (
    r"bearer|basic|eyj|api[-_]?key|authorization|cookie|client_secret"
    r"|client_assertion|password|refresh_token|access_token|id_token|device_code"
    r"|://|deltatoken|skiptoken"
)
_MIGHT_MATCH = re.compile("(?i)" + _TRIGGER_WORDS)
"""A word every one of ``_PATTERNS`` needs: text without one skips them all
(one search instead of six substitutions on nearly every logged string)."""
_MIGHT_MATCH_LOWER = re.compile(_TRIGGER_WORDS)
"""The same words, for ASCII text once lower-cased: several times faster than
``(?i)``, and for ASCII text exactly what it matches.  (Beyond ASCII, ``(?i)``
also folds letters such as the long s, so such text takes the slow search.)"""

_MIN_SECRET_LENGTH = 4
_secrets: set[str] = set()
_by_prefix: dict[str, tuple[str, ...]] = {}
"""Registered secrets by their first four characters, longest first: a string
is scanned once, position by position, whatever the number of secrets."""
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Replace ``value`` by ``***`` wherever it appears in any logged string.

    Config loading registers every secret it resolves; values shorter than
    four characters are ignored (they would mask ordinary words).
    """
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return

    with _secrets_lock:
        if value in _secrets:
            return
        prefix = value[:_MIN_SECRET_LENGTH]
        group = sorted((*_by_prefix.get(prefix, ()), value), key=len, reverse=True)
        _by_prefix[prefix] = tuple(group)  # one atomic store: readers never wait
        _secrets.add(value)


def redact_text(text: str) -> str:
    """Mask registered secrets and token-looking substrings in ``text``."""
    text = _mask_secrets(text, _by_prefix) if _by_prefix else text
    if not _might_match(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def mask_registered(text: str) -> str:
    """Mask only registered secrets: for text such as configuration problem
    lines, where ``api_key: <message>`` is not a header to hide."""
    return _mask_secrets(text, _by_prefix) if _by_prefix else text


def _might_match(text: str) -> bool:
    """Whether ``text`` holds a word one of ``_PATTERNS`` needs."""
    if text.isascii():
        return _MIGHT_MATCH_LOWER.search(text.lower()) is not None
    return _MIGHT_MATCH.search(text) is not None


def _mask_secrets(text: str, by_prefix: Mapping[str, tuple[str, ...]]) -> str:
    """Every character of every occurrence of a secret is masked.

    Overlapping or nested occurrences become one ``***``.
    """
    spans = _secret_spans(text, by_prefix)
    if not spans:
        return text

    parts, done = [], 0
    start, end = spans[0]
    for next_start, next_end in spans[1:]:
        if next_start < end:
            end = max(end, next_end)
            continue
        parts += [text[done:start], MASK]
        done, start, end = end, next_start, next_end
    parts += [text[done:start], MASK, text[end:]]
    return "".join(parts)


def _secret_spans(
    text: str, by_prefix: Mapping[str, tuple[str, ...]]
) -> list[tuple[int, int]]:
    """``(start, end)`` of the longest secret starting at each position."""
    spans = []
    width = _MIN_SECRET_LENGTH
    groups = by_prefix.get  # bound once: this loop runs for every character
    for index in range(len(text) - width + 1):
        group = groups(text[index : index + width])
        if group is None:
            continue
        for secret in group:
            if text.startswith(secret, index):
                spans.append((index, index + len(secret)))
                break
    return spans
