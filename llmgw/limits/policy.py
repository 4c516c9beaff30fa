"""What a limit is: per-tier limit sets, USD budgets and the period math behind them (pure).

A budget's period is calendar-aligned in UTC (``daily``, ``weekly`` from Monday,
``monthly``) or a rolling duration (``"5h"``, ``"7d"``). Rate windows and rolling budgets
are sliding windows of :data:`SLIDING_BUCKETS` buckets, so a counter is a handful of
integers whatever the traffic; calendar windows are one bucket keyed by their start.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ConfigError

__all__ = (
    "SLIDING_BUCKETS",
    "Budget",
    "LimitSet",
    "Period",
    "Tier",
    "Window",
    "format_usd",
    "parse_limit_set",
    "parse_limit_sets",
)

#: Buckets per sliding window: a 60 s window moves in 3 s steps.
SLIDING_BUCKETS = 20
_CALENDAR = ("daily", "weekly", "monthly")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Tier(enum.StrEnum):
    """Whom a limit set applies to; each tier keeps separate counters per name."""

    GLOBAL = "global"
    KEY = "key"
    USER = "user"
    TEAM = "team"
    PROJECT = "project"
    SESSION = "session"


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """Where a charge made now lands, as bucket ids (integers shared by every instance)."""

    bucket: int
    #: Smallest bucket id still inside the window; older buckets are dropped.
    oldest: int
    #: Seconds per bucket (sliding) or ``0`` for a calendar window.
    width: float
    #: When a calendar window starts over; ``None`` for sliding windows.
    reset_at: float | None
    #: How long a counter must outlive its last write.
    ttl: float

    def reset_after(self, first_used: int, now: float) -> float:
        """Seconds until capacity frees, given the oldest bucket holding a charge (-1: none)."""
        if self.reset_at is not None:
            return max(self.reset_at - now, 0.0)
        if first_used < 0:
            return self.width
        return max((first_used + SLIDING_BUCKETS) * self.width - now, 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Period:
    """A budget period: ``kind`` is ``daily``/``weekly``/``monthly`` or ``rolling``."""

    kind: str
    seconds: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Period:
        """``daily``, ``weekly``, ``monthly`` or a rolling duration: ``90m``, ``5h``, ``7d``."""
        if text in _CALENDAR:
            return cls(kind=text)
        m = _DURATION.match(text)
        if m is None or float(m.group(1)) <= 0:
            raise ValueError(
                f"expected daily, weekly, monthly or a duration like '5h', got {text!r}"
            )
        return cls(kind="rolling", seconds=float(m.group(1)) * _UNIT[m.group(2)])

    @property
    def slug(self) -> str:
        """Stable name for counter keys (``daily``, ``r18000``)."""
        return self.kind if self.kind != "rolling" else f"r{self.seconds:g}"

    @property
    def spec(self) -> str:
        """The text :meth:`parse` reads back (``daily``, ``5h``)."""
        if self.kind != "rolling":
            return self.kind
        for unit in ("d", "h", "m"):
            if self.seconds % _UNIT[unit] == 0:
                return f"{self.seconds / _UNIT[unit]:g}{unit}"
        return f"{self.seconds:g}s"

    @property
    def label(self) -> str:
        return self.kind if self.kind != "rolling" else f"rolling {self.spec}"

    def window(self, now: float) -> Window:
        if self.kind == "rolling":
            return sliding_window(self.seconds, now)
        start, end = _calendar_bounds(self.kind, now)
        return Window(
            bucket=int(start), oldest=int(start), width=0.0, reset_at=end, ttl=end - now + 60
        )


def sliding_window(seconds: float, now: float) -> Window:
    width = seconds / SLIDING_BUCKETS
    bucket = math.floor(now / width)
    return Window(
        bucket=bucket,
        oldest=bucket - SLIDING_BUCKETS + 1,
        width=width,
        reset_at=None,
        ttl=seconds + width,
    )


def _calendar_bounds(kind: str, now: float) -> tuple[float, float]:
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "daily":
        start, end = day, day + timedelta(days=1)
    elif kind == "weekly":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """A USD cap per period; ``warn_at`` (a fraction) marks the soft threshold."""

    micros: int
    period: Period
    warn_at: float | None = None

    @property
    def soft_micros(self) -> int | None:
        return None if self.warn_at is None else int(self.micros * self.warn_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitSet:
    """The limits one key, user, team, project or session is held to; ``None`` = unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None
    budgets: tuple[Budget, ...] = ()

    @property
    def empty(self) -> bool:
        return (
            self.rpm is None and self.tpm is None and self.concurrent is None and not self.budgets
        )

    def to_json(self) -> dict[str, Any]:
        """The mapping :func:`parse_limit_set` reads back (for the admin API and storage)."""
        out: dict[str, Any] = {}
        for name in ("rpm", "tpm", "concurrent"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.budgets:
            out["budgets"] = [
                {
                    "usd": b.micros / 1_000_000,
                    "period": b.period.spec,
                    **({"warn_at": b.warn_at} if b.warn_at is not None else {}),
                }
                for b in self.budgets
            ]
        return out


def format_usd(micros: int) -> str:
    return f"${micros / 1_000_000:,.2f}"


def parse_limit_set(data: Any, path: str) -> LimitSet:
    """Validate a limit-set mapping (config table, key metadata, admin request body).

    ``{"rpm": 60, "tpm": 200000, "concurrent": 4,
    "budgets": [{"usd": 25, "period": "daily", "warn_at": 0.8}]}``; errors name the path.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a table")
    if "max_concurrency" in data and "concurrent" not in data:  # the key store's spelling
        data = {**data, "concurrent": data["max_concurrency"]}
        data.pop("max_concurrency")
    unknown = sorted(set(data) - {"rpm", "tpm", "concurrent", "budgets"})
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key")
    counts = {name: _positive_int(data, name, path) for name in ("rpm", "tpm", "concurrent")}
    raw_budgets = data.get("budgets", [])
    if not isinstance(raw_budgets, list):
        raise ConfigError(f"{path}.budgets: expected an array of tables")
    budgets = tuple(_budget(raw, f"{path}.budgets[{i}]") for i, raw in enumerate(raw_budgets))
    slugs = [b.period.slug for b in budgets]
    if len(set(slugs)) != len(slugs):
        raise ConfigError(f"{path}.budgets: two budgets with the same period")
    return LimitSet(budgets=budgets, **counts)


def parse_limit_sets(data: Any, path: str) -> dict[Tier, LimitSet]:
    """``{tier: limit set}`` from a table keyed by tier name (``[limits.defaults]``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a table")
    out: dict[Tier, LimitSet] = {}
    for name, raw in data.items():
        try:
            tier = Tier(name)
        except ValueError:
            tiers = ", ".join(t.value for t in Tier)
            raise ConfigError(f"{path}.{name}: unknown tier (expected one of {tiers})") from None
        out[tier] = parse_limit_set(raw, f"{path}.{name}")
    return out


def _positive_int(data: Mapping[str, Any], name: str, path: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{path}.{name}: expected a non-negative integer")
    return value


def _budget(raw: Any, path: str) -> Budget:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a table")
    unknown = sorted(set(raw) - {"usd", "period", "warn_at"})
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key")
    usd = raw.get("usd")
    if not isinstance(usd, int | float) or isinstance(usd, bool) or usd < 0:
        raise ConfigError(f"{path}.usd: expected a non-negative number")
    period_text = raw.get("period", "monthly")
    if not isinstance(period_text, str):
        raise ConfigError(f"{path}.period: expected a string")
    try:
        period = Period.parse(period_text)
    except ValueError as exc:
        raise ConfigError(f"{path}.period: {exc}") from None
    warn_at = raw.get("warn_at")
    if warn_at is not None and (
        not isinstance(warn_at, int | float) or isinstance(warn_at, bool) or not 0 < warn_at <= 1
    ):
        raise ConfigError(f"{path}.warn_at: expected a fraction in (0, 1]")
    return Budget(
        micros=round(usd * 1_000_000),
        period=period,
        warn_at=float(warn_at) if warn_at is not None else None,
    )
