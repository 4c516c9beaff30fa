"""The audit log: hash-chained records of every request and admin change.

See :func:`llmgw.middlewares.audit.audit_middleware` for the request side and
``llmgw audit verify`` / ``llmgw audit export`` for the command line.
"""

from .base import AuditQuery, AuditReader, AuditSink
from .capture import CapturePolicy
from .chain import GENESIS, SealedRecord, VerifyReport, verify
from .jsonl import JSONLAuditSink
from .redact import Redactor
from .sql import SQLAuditSink
from .writer import AuditUnavailableError, AuditWriter

__all__ = (
    "GENESIS",
    "AuditQuery",
    "AuditReader",
    "AuditSink",
    "AuditUnavailableError",
    "AuditWriter",
    "CapturePolicy",
    "JSONLAuditSink",
    "Redactor",
    "SQLAuditSink",
    "SealedRecord",
    "VerifyReport",
    "verify",
)
