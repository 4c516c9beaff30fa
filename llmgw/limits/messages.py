"""What a client is told: refusals worded for Claude Code and the rate-limit headers.

Budgets refuse with a 400 (Claude Code shows it and stops) and say when they reset;
rate limits refuse with a 429, ``retry-after`` and Anthropic's ``anthropic-ratelimit-*``
headers, which successful answers carry too (the tightest scope's state).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from ..errors import InvalidRequestError, LlmgwError, RateLimitError
from .counters import Counter, Reserved
from .plan import Layout, Slot
from .policy import Window, format_usd

__all__ = (
    "BudgetExceededError",
    "LimitsUnavailableError",
    "RateHeaders",
    "refusal",
    "success_headers",
)

log = logging.getLogger("llmgw.limits")


class BudgetExceededError(InvalidRequestError):
    """400 ``invalid_request_error``: Claude Code shows the message and does not retry
    (it retries 429 and 5xx up to ten times; 403 would be shown as "Failed to authenticate")."""


class LimitsUnavailableError(LlmgwError):
    """503: the shared counter store is unreachable and the limiter fails closed."""

    status_code = 503


class RateHeaders:
    """Formats ``anthropic-ratelimit-*`` headers; remembers the last reset it formatted per
    kind (requests, tokens), since every request in the same second resets at the same
    instant, while requests and tokens reset at different ones."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        #: kind -> (the three header names, last second formatted, its text).
        self._last: dict[str, tuple[tuple[str, str, str], int, str]] = {}

    def add(self, out: dict[str, str], what: str, limit: int, used: int, reset: float) -> None:
        second = int(reset)
        last = self._last.get(what)
        if last is None:
            prefix = f"anthropic-ratelimit-{what}"
            names = (f"{prefix}-limit", f"{prefix}-remaining", f"{prefix}-reset")
            last = self._last[what] = (names, second, _rfc3339(second))
        elif last[1] != second:
            last = self._last[what] = (last[0], second, _rfc3339(second))
        names, _, text = last
        out[names[0]] = str(limit)
        out[names[1]] = str(limit - used if used < limit else 0)
        out[names[2]] = text


def refusal(
    seen: Reserved, counters: Sequence[Counter], slots: Sequence[Slot], now: float
) -> LlmgwError:
    """The error for the counter ``seen.refused`` names."""
    i = seen.refused
    assert i is not None
    c, slot = counters[i], slots[i]
    used, scope = seen.used[i], slot.scope
    if slot.metric == "usd":
        assert slot.budget is not None and slot.clock is not None
        return BudgetExceededError(
            f"Budget exhausted: {scope.describe()} {slot.budget.period.label} budget of "
            f"{format_usd(c.limit)} has {format_usd(max(c.limit - used, 0))} left "
            f"({format_usd(used)} spent or reserved) and this request may cost up to "
            f"{format_usd(c.amount)}. {_resets(slot.clock.at(now), seen.first[i], now)}"
        )
    if slot.metric == "concurrent":
        return RateLimitError(
            f"Rate limited: {scope.describe()} limit of {c.limit} concurrent requests is "
            "reached; retry when one finishes.",
            retry_after=1,
        )
    assert slot.clock is not None
    retry = slot.clock.at(now).reset_after(seen.first[i], now)
    what = "requests" if slot.metric == "rpm" else "tokens"
    headers: dict[str, str] = {}
    RateHeaders().add(headers, what, c.limit, used, now + retry)
    detail = "" if slot.metric == "rpm" else f" (this request may use up to {c.amount})"
    return RateLimitError(
        f"Rate limited: {scope.describe()} limit of {c.limit} {what} per minute is "
        f"reached{detail}; retry in {max(1, round(retry))} s.",
        retry_after=retry,
        headers=headers,
    )


def success_headers(
    seen: Reserved, counters: Sequence[Counter], layout: Layout, now: float, fmt: RateHeaders
) -> dict[str, str]:
    """The tightest rpm and tpm state, plus a warning once a soft budget threshold is past."""
    out: dict[str, str] = {}
    used, slots = seen.used, layout.slots
    for i in layout.warn:
        slot = slots[i]
        budget = slot.budget
        before = used[i] - counters[i].amount
        soft = budget.soft_micros if budget is not None else None
        if budget is not None and soft is not None and before >= soft:
            text = (
                f"{slot.scope.describe()} {budget.period.label} budget: "
                f"{format_usd(before)} of {format_usd(slot.limit)} used"
            )
            log.warning("soft budget threshold passed: %s", text)
            out["x-llmgw-budget-warning"] = _ascii(text)
    for what, indices in (("requests", layout.rpm), ("tokens", layout.tpm)):
        if not indices:
            continue
        tight = indices[0]
        for i in indices[1:]:
            if slots[i].limit - used[i] < slots[tight].limit - used[tight]:
                tight = i
        clock = slots[tight].clock
        assert clock is not None
        reset = now + clock.at(now).reset_after(seen.first[tight], now)
        fmt.add(out, what, slots[tight].limit, used[tight], reset)
    return out


def _resets(window: Window, first: int, now: float) -> str:
    if window.reset_at is not None:
        return f"It resets at {_rfc3339(window.reset_at)} (in {_human(window.reset_at - now)})."
    wait = window.reset_after(first, now)
    return f"Spend starts ageing out of the window in {_human(wait)}."


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).isoformat().replace("+00:00", "Z")


def _human(seconds: float) -> str:
    s = max(int(seconds), 1)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d" if d else "", f"{h}h" if h else "", f"{m}m" if m and not d else ""]
    text = " ".join(p for p in parts if p)
    return text or f"{s}s"


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode()
