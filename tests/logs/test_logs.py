"""Logging: format selection, stdlib routing, journal prefix, per-pass context."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from syncd.logs import bind_pass, configure_logging, is_journal


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_syncd_handler", False)]:
        root.removeHandler(handler)
    structlog.contextvars.clear_contextvars()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def test_json_lines_when_not_a_terminal() -> None:
    """Off a terminal, each event is one JSON object with the common fields."""
    stream = io.StringIO()
    configure_logging(stream=stream)

    structlog.get_logger("syncd.engine").info("pass_started", users=3)

    [line] = _lines(stream)
    assert line["event"] == "pass_started"
    assert line["level"] == "info"
    assert line["logger"] == "syncd.engine"
    assert line["users"] == 3
    assert str(line["timestamp"]).endswith("Z")
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]


def test_console_rendering_on_a_terminal() -> None:
    """On a terminal the output is human-readable text, not JSON."""
    stream = _Terminal()
    configure_logging(stream=stream)

    structlog.get_logger("syncd.engine").warning("graph_throttled", attempt=2)

    text = stream.getvalue()
    assert "graph_throttled" in text
    assert "attempt" in text
    assert not text.lstrip().startswith("{")


def test_explicit_json_on_a_terminal() -> None:
    """fmt=json forces JSON even on a terminal."""
    stream = _Terminal()
    configure_logging(stream=stream, fmt="json")

    structlog.get_logger("syncd").info("service_started")

    assert _lines(stream)[0]["event"] == "service_started"


def test_stdlib_records_share_the_fields() -> None:
    """A stdlib logger's record comes out as JSON with the same fields."""
    stream = io.StringIO()
    configure_logging(stream=stream)

    logging.getLogger("alembic.runtime.migration").warning("Running upgrade %s", "0001")

    [line] = _lines(stream)
    assert line["event"] == "Running upgrade 0001"
    assert line["level"] == "warning"
    assert line["logger"] == "alembic.runtime.migration"
    assert str(line["timestamp"]).endswith("Z")


def test_noisy_libraries_stay_at_warning() -> None:
    """httpx INFO lines (full URLs) are dropped even at debug level."""
    stream = io.StringIO()
    configure_logging(stream=stream, level="debug")

    logging.getLogger("httpx").info("HTTP Request: GET https://graph.example/x")
    logging.getLogger("apscheduler.scheduler").info("Added job")
    logging.getLogger("httpx").warning("connection pool full")

    assert [line["event"] for line in _lines(stream)] == ["connection pool full"]


def test_level_filters_own_events() -> None:
    """At level warning, info events are not written."""
    stream = io.StringIO()
    configure_logging(stream=stream, level="warning")

    log = structlog.get_logger("syncd.engine")
    log.info("pass_started")
    log.warning("graph_throttled")

    assert [line["event"] for line in _lines(stream)] == ["graph_throttled"]


def test_reconfiguring_does_not_double_lines() -> None:
    """Calling configure_logging twice writes each event once."""
    stream = io.StringIO()
    configure_logging(stream=stream)
    configure_logging(stream=stream)

    structlog.get_logger("syncd").info("once")

    assert len(_lines(stream)) == 1


def test_journal_lines_carry_syslog_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the journal each line starts with <3>, <4>, <6> or <7> by level."""
    with (tmp_path / "journal").open("w+") as stream:
        stat = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        configure_logging(stream=stream, level="debug")

        log = structlog.get_logger("syncd")
        log.error("ledger_unreachable")
        log.warning("graph_throttled")
        log.info("pass_finished")
        log.debug("page_fetched")
        logging.getLogger("sqlalchemy.pool").error("pool broken")
        stream.seek(0)
        lines = stream.read().splitlines()

    assert [line[:3] for line in lines] == ["<3>", "<4>", "<6>", "<7>", "<3>"]
    assert json.loads(lines[0][3:])["event"] == "ledger_unreachable"


def test_not_journal_for_another_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JOURNAL_STREAM naming another file does not add priority prefixes."""
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    with (tmp_path / "plain").open("w") as stream:
        assert not is_journal(stream)
    assert not is_journal(io.StringIO())


def test_bind_pass_adds_user_and_pass_id() -> None:
    """Lines inside bind_pass carry the user and one pass id; outside, none."""
    stream = io.StringIO()
    configure_logging(stream=stream)
    log = structlog.get_logger("syncd.engine")

    with bind_pass("alice@contoso.example") as pass_id:
        log.info("round_started")
        with bind_pass("alice@contoso.example") as inner:
            logging.getLogger("alembic").warning("stdlib inside")
    log.info("after")

    first, second, after = _lines(stream)
    assert inner == pass_id
    assert first["user"] == second["user"] == "alice@contoso.example"
    assert first["pass_id"] == second["pass_id"] == pass_id
    assert "user" not in after and "pass_id" not in after


def test_bind_pass_ids_differ_per_pass() -> None:
    """Two passes of one user get two pass ids."""
    with bind_pass("bob@contoso.example") as first:
        pass
    with bind_pass("bob@contoso.example") as second:
        pass

    assert first != second


@pytest.mark.parametrize(
    "name",
    [
        "httpx",
        "msal.application",
        "sqlalchemy.engine.Engine",
        "apscheduler.scheduler",
        "alembic.runtime.migration",
    ],
)
def test_library_records_get_context_fields_and_redaction(name: str) -> None:
    """A library's warning carries the pass context and is redacted like ours."""
    stream = io.StringIO()
    configure_logging(stream=stream, level="debug")
    token = "eyJhbGciOiJSUzI1NiJ9.eyJvaWQiOiIxMjM0NTY3OCJ9.c2lnbmF0dXJlLXBhcnQ"

    with bind_pass("alice@contoso.example") as pass_id:
        logging.getLogger(name).warning("sent Authorization: Bearer %s", token)

    [line] = _lines(stream)
    assert line["logger"] == name
    assert line["level"] == "warning"
    assert (line["user"], line["pass_id"]) == ("alice@contoso.example", pass_id)
    assert token not in str(line["event"])
    assert str(line["timestamp"]).endswith("Z")
