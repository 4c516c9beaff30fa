"""Budgets and rate limits: policy values, the counter contract and its backends.

The limiter (:mod:`llmgw.limits.limiter`, compiling scopes with :mod:`~llmgw.limits.plan`
and wording refusals with :mod:`~llmgw.limits.messages`), the Redis backend, the
per-entity policy store (:mod:`~llmgw.limits.store`, read through
:mod:`~llmgw.limits.source`) and its admin routes (:mod:`~llmgw.limits.admin`) are
imported from their modules; this package only re-exports the pure pieces.
"""

from .counters import Counter, CounterBackend, CounterKind, Reserved, StoreUnavailableError
from .memory import MemoryCounters
from .policy import Budget, LimitSet, Period, Tier, parse_limit_set, parse_limit_sets

__all__ = (
    "Budget",
    "Counter",
    "CounterBackend",
    "CounterKind",
    "LimitSet",
    "MemoryCounters",
    "Period",
    "Reserved",
    "StoreUnavailableError",
    "Tier",
    "parse_limit_set",
    "parse_limit_sets",
)
