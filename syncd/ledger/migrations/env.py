"""Alembic environment: runs on the connection syncd hands over.

syncd calls alembic programmatically (see ``syncd.ledger._migrate``); there
is no alembic.ini. To write a new revision by hand, point alembic at this
directory with ``script_location`` and a ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from syncd.ledger._schema import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as owned:
        _run(owned)


_main()
