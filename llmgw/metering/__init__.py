"""Usage records, their stores, the off-path writer and the reports."""

from .journal import Journal, SpillFile
from .record import DISCARDED, UsageRecord
from .report import (
    GROUP_BY,
    UsageGroup,
    UsageReport,
    aggregate_records,
    usage_report_handler,
    usage_routes,
)
from .state import PendingRecord, RecordEntry, closed_record, open_record
from .store import MemoryUsageStore, SQLUsageStore, UsageStore
from .writer import FullQueuePolicy, UsageSink, UsageWriter

__all__ = (
    "DISCARDED",
    "GROUP_BY",
    "FullQueuePolicy",
    "Journal",
    "MemoryUsageStore",
    "PendingRecord",
    "RecordEntry",
    "SQLUsageStore",
    "SpillFile",
    "UsageGroup",
    "UsageRecord",
    "UsageReport",
    "UsageSink",
    "UsageStore",
    "UsageWriter",
    "aggregate_records",
    "closed_record",
    "open_record",
    "usage_report_handler",
    "usage_routes",
)
