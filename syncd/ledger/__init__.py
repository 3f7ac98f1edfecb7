"""The ledger: one row per (user, event id), delta links, user state, leases.

SQLite by default (one process, guarded by a lock file), PostgreSQL for
several replicas sharing users through fenced row leases.  The schema is
versioned with Alembic migrations shipped in ``migrations/``.
"""

from syncd.ledger._engine import ledger_file
from syncd.ledger._keeper import LeaseKeeper
from syncd.ledger._ledger import Ledger
from syncd.ledger._migrate import head_revision
from syncd.ledger._types import (
    Cursor,
    LedgerSchemaMissing,
    LedgerSchemaTooNew,
    Record,
    State,
    StateConflict,
    UserState,
    utcnow,
)

__all__ = [
    "Cursor",
    "LeaseKeeper",
    "Ledger",
    "LedgerSchemaMissing",
    "LedgerSchemaTooNew",
    "Record",
    "State",
    "StateConflict",
    "UserState",
    "head_revision",
    "ledger_file",
    "utcnow",
]
