"""One usage record: a flat, frozen row of what a proxied request consumed.

A record is written twice: *open* (``outcome = in_flight``) before the upstream is called,
and *closed* once the relay returned, whatever happened. Both states share the request id,
so every store keeps one row per request and a closed row is never reopened. The request
path takes cheap snapshots instead (state.py); the writer builds records from them.
"""

from __future__ import annotations

import dataclasses
import operator
import time
from dataclasses import dataclass, field
from typing import Any

from .._json import dumps_line
from ..usage import Outcome

__all__ = ("DISCARDED", "FIELD_NAMES", "UsageRecord", "utc_day")

#: The closing state of a request that never became a proxied call: stores delete its open
#: row instead of keeping it.
DISCARDED = "discarded"


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRecord:
    """What one proxied request consumed, exactly as the provider reported it.

    Token fields follow the Anthropic usage object: ``input_tokens`` excludes both cache
    classes; ``cache_creation_tokens`` is the 5m + 1h total (plus any unsplit remainder).
    Times are Unix seconds (``started_at``) and seconds (``ttfb``, ``duration``).
    """

    request_id: str
    started_at: float
    outcome: str = Outcome.IN_FLIGHT.value
    finished_at: float | None = None
    key_id: str | None = None
    user: str | None = None
    team: str | None = None
    project: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    client_format: str | None = None
    operation: str | None = None
    stream: bool = False
    provider: str | None = None
    deployment: str | None = None
    #: Every try as ``[{"deployment", "provider", "status", "error", "duration"}]``.
    attempts: tuple[dict[str, Any], ...] = ()
    requested_model: str | None = None
    upstream_model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cache_read_tokens: int = 0
    thinking_tokens: int | None = None
    server_tool_use: dict[str, int] = field(default_factory=dict)
    #: Output was estimated from the deltas of a stream cut before its final usage.
    estimated: bool = False
    #: The tap could not parse the response; the tokens are what was read before.
    parse_error: str | None = None
    stop_reason: str | None = None
    message_id: str | None = None
    ttfb: float | None = None
    duration: float | None = None
    bytes_out: int = 0
    status: int | None = None
    error: str | None = None
    #: Integer micro-dollars; ``None`` while open or when the model has no known price.
    cost_micros: int | None = None

    @property
    def is_open(self) -> bool:
        return self.outcome == Outcome.IN_FLIGHT.value

    @property
    def day(self) -> str:
        """UTC calendar day of ``started_at`` (``YYYY-MM-DD``), the report's ``day`` group."""
        return utc_day(self.started_at)

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy costs more than the rest of a request's
        # metering, and every value here is already JSON-ready.
        return dict(zip(FIELD_NAMES, _values(self), strict=True))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["attempts"] = tuple(values.get("attempts") or ())
        values["server_tool_use"] = dict(values.get("server_tool_use") or {})
        return cls(**values)

    def dumps(self) -> bytes:
        """One journal line (compact JSON, newline-terminated)."""
        return dumps_line(self.to_json())

    # The writer's RecordEntry protocol (see state.py): a whole record is its own line.
    journal_line = dumps
    snapshot_lines = dumps

    def record(self) -> UsageRecord:
        return self

    def values(self) -> tuple[Any, ...]:
        """The field values in field order (one C call: what the SQL store writes)."""
        values: tuple[Any, ...] = _values(self)
        return values


def utc_day(timestamp: float) -> str:
    """``YYYY-MM-DD`` of a Unix time, in UTC."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(UsageRecord))
_values = operator.attrgetter(*FIELD_NAMES)
