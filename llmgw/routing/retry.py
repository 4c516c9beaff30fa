"""Backoff between retries: exponential with full jitter, never shorter than a ``retry-after``."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ("RETRYABLE_STATUSES", "Backoff", "parse_retry_after")

#: Statuses after which another deployment (or a later retry) may succeed.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """``delay(n)`` before the n-th retry of a deployment already tried in this request.

    Full jitter (a uniform draw in ``[0, min(cap, base * 2**n)]``) spreads the retries of many
    clients that failed at the same moment instead of synchronising them.
    """

    base: float = 0.25
    cap: float = 8.0
    #: A ``retry-after`` longer than this is not waited out (the client is better placed to).
    max_retry_after: float = 10.0

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based), or ``None`` to give up."""
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        jittered = rng.uniform(0.0, min(self.cap, self.base * (1 << min(retry, 30))))
        return max(jittered, retry_after or 0.0)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (delta-seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
