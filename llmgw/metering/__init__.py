"""Usage records, their stores, the off-path writer and the reports."""

from .journal import Journal, SpillFile
from .record import DISCARDED, UsageRecord, closed_record, open_record
from .report import (
    GROUP_BY,
    UsageGroup,
    UsageReport,
    aggregate_records,
    usage_report_handler,
    usage_routes,
)
from .store import MemoryUsageStore, SQLUsageStore, UsageStore
from .writer import FullQueuePolicy, UsageSink, UsageWriter

__all__ = (
    "DISCARDED",
    "GROUP_BY",
    "FullQueuePolicy",
    "Journal",
    "MemoryUsageStore",
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
