"""Usage reports: totals per group over a time range, as JSON (``GET /admin/usage``) or a table.

The HTTP handler is a plain function over the app's :data:`~llmgw.keys.USAGE_STORE`, so
the admin API mounts it behind its own credential check; it does no authentication itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import InvalidRequestError
from ..keys import USAGE_STORE

if TYPE_CHECKING:
    from .record import UsageRecord

__all__ = (
    "GROUP_BY",
    "UsageGroup",
    "UsageReport",
    "aggregate_records",
    "build_report",
    "format_table",
    "parse_time",
    "usage_report_handler",
    "usage_routes",
)

#: What a report can be grouped by.
GROUP_BY = ("key", "user", "team", "project", "session", "model", "provider", "day", "outcome")

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageGroup:
    """Totals of one group; ``group`` is ``None`` for records without that attribute."""

    group: str | None
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cost_micros: int = 0
    #: Records whose outcome is anything but ``complete`` (cut, failed, in flight).
    not_complete: int = 0
    #: Closed records of models with no known price (their cost counts as 0).
    unpriced: int = 0

    @property
    def cache_hit_ratio(self) -> float:
        """Cache reads over all input tokens (uncached + written + read)."""
        total = self.input_tokens + self.cache_creation_tokens + self.cache_read_tokens
        return self.cache_read_tokens / total if total else 0.0

    def sort_key(self) -> tuple[int, str]:
        return (-self.cost_micros, self.group or "")

    def __add__(self, other: UsageGroup) -> UsageGroup:
        return UsageGroup(
            group=self.group,
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_tokens=self.cache_creation_tokens + other.cache_creation_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cost_micros=self.cost_micros + other.cost_micros,
            not_complete=self.not_complete + other.not_complete,
            unpriced=self.unpriced + other.unpriced,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cost_micros": self.cost_micros,
            "cost_usd": f"{self.cost_micros / 1_000_000:.6f}",
            "cache_hit_ratio": round(self.cache_hit_ratio, 4),
            "not_complete": self.not_complete,
            "unpriced": self.unpriced,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageReport:
    by: str
    since: float
    until: float
    groups: tuple[UsageGroup, ...]

    @property
    def total(self) -> UsageGroup:
        total = UsageGroup(group=None)
        for group in self.groups:
            total = total + group
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "groups": [g.to_json() for g in self.groups],
            "total": self.total.to_json(),
        }


def _group_value(record: UsageRecord, by: str) -> str | None:
    if by == "key":
        return record.key_id
    if by == "session":
        return record.session_id
    if by == "model":
        return record.upstream_model or record.requested_model
    if by == "day":
        return record.day
    value: str | None = getattr(record, by)
    return value


def aggregate_records(records: Iterable[UsageRecord], by: str) -> list[UsageGroup]:
    """The same totals the SQL store computes, over records in memory."""
    if by not in GROUP_BY:
        raise ValueError(f"cannot group usage by {by!r}; choose one of {', '.join(GROUP_BY)}")
    groups: dict[str | None, UsageGroup] = {}
    for r in records:
        if r.outcome == "discarded":
            continue
        key = _group_value(r, by)
        one = UsageGroup(
            group=key,
            requests=1,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cache_creation_tokens=r.cache_creation_tokens,
            cache_read_tokens=r.cache_read_tokens,
            cost_micros=r.cost_micros or 0,
            not_complete=int(r.outcome != "complete"),
            unpriced=int(r.cost_micros is None and not r.is_open),
        )
        groups[key] = groups[key] + one if key in groups else one
    return sorted(groups.values(), key=UsageGroup.sort_key)


def parse_time(value: str, *, now: float | None = None) -> float:
    """``7d``/``24h``/``30m`` ago, an ISO date or datetime (UTC if naive), or Unix seconds."""
    now = time.time() if now is None else now
    value = value.strip()
    match = _RELATIVE.match(value)
    if match:
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"invalid time {value!r}: use 7d, 24h, 30m, an ISO date or Unix seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def build_report(store: Any, by: str, *, since: float, until: float) -> UsageReport:
    """Aggregate ``store`` (a :class:`~llmgw.metering.store.UsageStore`)."""
    groups = await store.aggregate(by, since=since, until=until)
    return UsageReport(by=by, since=since, until=until, groups=tuple(groups))


async def usage_report_handler(request: web.Request) -> web.Response:
    """``GET /admin/usage?by=team&since=7d&until=...``: totals as JSON.

    Mount it behind the admin credential check; it authenticates nothing itself.
    """
    by = request.query.get("by", "key")
    if by not in GROUP_BY:
        raise InvalidRequestError(f"by: must be one of {', '.join(GROUP_BY)}")
    try:
        now = time.time()
        since = parse_time(request.query.get("since", "30d"), now=now)
        until = parse_time(request.query["until"], now=now) if "until" in request.query else now
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None
    store = request.config_dict[USAGE_STORE]
    report = await build_report(store, by, since=since, until=until)
    return web.json_response(report.to_json())


def usage_routes(router: web.UrlDispatcher) -> None:
    """The admin API's route table for reports: ``GET /admin/usage``."""
    router.add_get("/usage", usage_report_handler, allow_head=False)


def format_table(report: UsageReport) -> str:
    """A fixed-width text table with a total row, for ``llmgw usage``."""
    header: tuple[str, ...] = (report.by, "requests", "input", "output", "cache write")
    header = (*header, "cache read", "hit ratio", "cost USD", "not complete")
    rows: list[Sequence[str]] = [header]
    for g in (*report.groups, report.total):
        rows.append(
            (
                g.group or "-",
                str(g.requests),
                str(g.input_tokens),
                str(g.output_tokens),
                str(g.cache_creation_tokens),
                str(g.cache_read_tokens),
                f"{g.cache_hit_ratio:.1%}",
                f"{g.cost_micros / 1_000_000:.6f}",
                str(g.not_complete),
            )
        )
    rows[-1] = ("TOTAL", *rows[-1][1:])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0 or n == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
