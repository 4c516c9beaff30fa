"""Persistence: one small SQL database handle shared by keys, usage and audit stores."""

from .db import Database, open_database

__all__ = ("Database", "open_database")
