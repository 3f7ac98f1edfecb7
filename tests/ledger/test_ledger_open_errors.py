"""A ledger URL that cannot work is a LedgerError in words, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.errors import LedgerError
from syncd.ledger import Ledger, ledger_file


def _refusal(url: str) -> LedgerError:
    with pytest.raises(LedgerError) as raised:
        Ledger.open(url)
    return raised.value


def test_sqlite_url_with_two_slashes_names_the_valid_forms() -> None:
    """``sqlite://tmp/x.db`` reads ``tmp`` as a host: the message shows the fix."""
    error = _refusal("sqlite://tmp/x.db")

    assert str(error) == (
        "invalid ledger URL sqlite://tmp/x.db; "
        "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
    )
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_missing_driver_is_named_without_the_password() -> None:
    """psycopg2 is not installed; the message names it and hides the password."""
    error = _refusal("postgresql+psycopg2://u:s3cret@127.0.0.1:1/x")

    assert str(error) == (
        "the driver for 'postgresql+psycopg2' is not installed (psycopg2); "
        "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
    )
    assert error.__suppress_context__


def test_unknown_driver_hides_the_password() -> None:
    """A driver SQLAlchemy does not know is named, the password masked."""
    error = _refusal("postgresql+nosuchdriver://u:s3cret@127.0.0.1:1/x")

    assert str(error) == (
        "unknown database 'postgresql+nosuchdriver' in ledger URL "
        "postgresql+nosuchdriver://u:***@127.0.0.1:1/x; "
        "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
    )


def test_mysql_is_unsupported() -> None:
    """Only SQLite and PostgreSQL are ledger databases."""
    error = _refusal("mysql://u:s3cret@127.0.0.1:1/x")

    assert str(error) == (
        "unsupported ledger database 'mysql'; "
        "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
    )


def test_text_that_is_no_url_is_refused_without_echoing_it() -> None:
    """Unparsable text may hold a password: it is not repeated."""
    error = _refusal("u:s3cret at db.example")

    assert str(error) == (
        "ledger URL is not a database URL; "
        "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
    )


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    """A ledger below a file cannot get its directory: said, not raised."""
    (tmp_path / "plain").write_text("")

    error = _refusal(f"sqlite:///{tmp_path}/plain/state/ledger.db")

    assert str(error) == (
        "cannot create the ledger directory: Not a directory "
        f"({tmp_path}/plain/state)"
    )


def test_uri_form_url_gets_its_directory(tmp_path: Path) -> None:
    """A ``file:`` URI-form URL is opened like the plain path, directory made."""
    ledger = Ledger.open(f"sqlite:///file:{tmp_path}/new/ledger.db?uri=true")

    assert (tmp_path / "new" / "ledger.db").is_file()
    ledger.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////srv/syncd/ledger.db", "/srv/syncd/ledger.db"),
        ("sqlite:///state/ledger.db", "state/ledger.db"),
        ("sqlite:///file:/srv/syncd/ledger.db?uri=true", "/srv/syncd/ledger.db"),
        ("sqlite:///file:///srv/syncd/a%20b.db?uri=true", "/srv/syncd/a b.db"),
        ("sqlite:///file:x?mode=memory&uri=true", None),
        ("sqlite://", None),
        ("postgresql+psycopg://u@127.0.0.1/x", None),
    ],
)
def test_ledger_file_of_a_url(url: str, expected: str | None) -> None:
    """The file a URL names, as `plan` and `status` check it exists."""
    assert ledger_file(url) == (None if expected is None else Path(expected))
