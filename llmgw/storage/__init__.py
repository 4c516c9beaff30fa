"""Persistence: one small SQL database handle shared by keys, usage and audit stores."""

from .db import Database, open_database
from .lifecycle import database_ctx, ensure_database

__all__ = ("Database", "database_ctx", "ensure_database", "open_database")
