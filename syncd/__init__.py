"""syncd: books Outlook meetings as InLoox time entries, exactly once."""

__version__ = "0.1.0"
