"""Schema versions: migrate to head, refuse a schema newer than the code."""

from __future__ import annotations

from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from syncd.ledger._engine import wrapped
from syncd.ledger._types import LedgerSchemaMissing, LedgerSchemaTooNew

log = structlog.get_logger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
PG_MIGRATION_LOCK = 0x5359_4E43  # "SYNC": serialises replicas starting at once


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic configuration built in code; no alembic.ini is needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this syncd knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the ledger ships at least one migration"
    return head


def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def prepare(engine: Engine, *, migrate: bool) -> None:
    """Check the schema version and, when asked, bring it to head."""
    with wrapped("schema check"), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK}
            )
        revision = current_revision(connection)
        _refuse_unknown(revision)
        if not migrate:
            if revision is None:
                raise LedgerSchemaMissing()
            return
        if revision != head_revision():
            _upgrade(connection, revision)


def _refuse_unknown(revision: str | None) -> None:
    if revision is not None and revision not in known_revisions():
        raise LedgerSchemaTooNew(revision)


def _upgrade(connection: Connection, revision: str | None) -> None:
    log.info("ledger_migrating", from_revision=revision, to_revision=head_revision())
    command.upgrade(alembic_config(connection), "head")
