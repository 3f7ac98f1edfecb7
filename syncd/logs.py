"""Logging: structlog everywhere, JSON in production, no secret in any line.

Every record -- syncd's own structlog events and the stdlib records of httpx,
msal, SQLAlchemy, APScheduler and friends -- goes through one
:class:`structlog.stdlib.ProcessorFormatter`, so all lines share the same
fields (``timestamp``, ``level``, ``logger``, ``event``), the same per-pass
context and the same redaction, which runs last before rendering.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from syncd.redact import MASK, redact_text

Format = Literal["auto", "json", "console"]


NOISY_LOGGERS = (
    "httpx",  # INFO lines carry full URLs; delta links hold state tokens
    "httpcore",
    "hpack",
    "h2",
    "msal",
    "urllib3",
    "azure",
    "kiota_http",
    "kiota_authentication_azure",
    "msgraph",
    "msgraph_core",
    "sqlalchemy",
    "alembic",  # INFO lines for every plugin; syncd logs ledger_migrating itself
    "apscheduler",
    "uvicorn.access",
)
"""Libraries that stay at WARNING whatever syncd's own level is."""

SECRET_KEYS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "device_code",
        "secret",
        "client_secret",
        "client_assertion",
        "api_key",
        "apikey",
        "x_api_key",
        "password",
        "passwd",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "credential",
        "credentials",
        "body",
        "body_preview",
        "bodypreview",
        "content",
    }
)
"""Keys whose values never reach a log line (compared case-insensitively)."""

_SECRET_SUFFIXES = ("_token", "_secret", "_password", "_api_key", "_apikey")

_SYSLOG_PRIORITY = {
    "critical": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}

_HANDLER_MARK = "_syncd_handler"


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _is_secret_name(key)


@functools.lru_cache(maxsize=1024)
def _is_secret_name(key: str) -> bool:
    """Field names are few and repeat on every line: decided once each."""
    name = key.lower().replace("-", "_")
    return name in SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {
            k: MASK if _is_secret_key(k) else _redact_value(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    return redact_text(str(value))


_LEADING_KEYS = ("timestamp", "level", "logger", "event")


def redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret keys and secret-looking text.

    Also puts the common fields first, so every line starts the same way.
    """
    ordered = {k: event_dict[k] for k in _LEADING_KEYS if k in event_dict}
    ordered.update(event_dict)
    return {
        key: MASK if _is_secret_key(key) else _redact_value(value)
        for key, value in ordered.items()
    }


def is_journal(stream: TextIO) -> bool:
    """True when ``stream`` is connected to the systemd journal.

    systemd sets ``JOURNAL_STREAM=<dev>:<inode>`` for the stream it connected;
    the variable is inherited by children, so compare it with the stream.
    """
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


class _JournalPrefix:
    """Wrap a renderer: prefix each line with its syslog priority ``<N>``."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        level = str(event_dict.get("level", name)).lower()
        prefix = f"<{_SYSLOG_PRIORITY.get(level, 6)}>"
        rendered = str(self._renderer(logger, name, event_dict))
        return "\n".join(prefix + line for line in rendered.split("\n"))


def _renderer(fmt: Format, stream: TextIO) -> Processor:
    use_console = fmt == "console" or (fmt == "auto" and _isatty(stream))
    renderer: Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(
            colors=_isatty(stream) and "NO_COLOR" not in os.environ,
            exception_formatter=structlog.dev.plain_traceback,
        )
    else:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    if is_journal(stream):
        return _JournalPrefix(renderer)
    return renderer


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _shared_processors() -> list[Processor]:
    """Steps both structlog events and stdlib records go through first."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(
    *,
    level: str = "info",
    fmt: Format = "auto",
    stream: TextIO | None = None,
    quiet: Sequence[str] = NOISY_LOGGERS,
) -> None:
    """Send every log record, structlog's and stdlib's, to ``stream``.

    ``fmt="auto"`` renders for humans on a terminal and JSON lines otherwise;
    on the systemd journal each line starts with its syslog priority.
    """
    stream = sys.stderr if stream is None else stream
    numeric = logging.getLevelNamesMapping()[level.upper()]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # plain text, never locals
            redact,
            _renderer(fmt, stream),
        ],
    )
    _install_handler(formatter, stream, numeric)
    for name in quiet:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _install_handler(formatter: logging.Formatter, stream: TextIO, level: int) -> None:
    """Replace syncd's root handler (a second call reconfigures, not doubles)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)

    handler = logging.StreamHandler(stream)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)


@contextmanager
def bind_pass(user: str) -> Iterator[str]:
    """Bind ``user`` and a fresh ``pass_id`` to every log line of this pass.

    Nested use for the same user (the service binds, the runner binds again)
    keeps the outer pass id, so both see one pass.
    """
    bound = structlog.contextvars.get_contextvars()
    if bound.get("user") == user and "pass_id" in bound:
        yield str(bound["pass_id"])
        return

    pass_id = uuid.uuid4().hex[:12]
    with structlog.contextvars.bound_contextvars(user=user, pass_id=pass_id):
        yield pass_id
