"""Reserve before forwarding, settle after: the limiter behind ``limits_middleware``.

For each scope a request belongs to (global, key, user, team, project, Claude Code
session) it charges requests-per-minute, the worst-case tokens-per-minute, an open-stream
lease and the worst-case cost against every budget, in one atomic step. After the answer
(any outcome) it corrects each charge to what was really used and releases the lease.

The hot path does no parsing and no date math: each scope's limits are compiled once to a
:class:`~llmgw.limits.plan.ScopePlan` (cached until its limit set changes) and each
period's window is cached per bucket (:class:`~llmgw.limits.plan.WindowClock`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..context import RequestContext
from ..pricing import PriceTable
from .counters import Counter, CounterBackend, Reserved, StoreUnavailableError
from .estimate import Estimate, WorstCase, estimate_request
from .leased import LeasedCounters
from .memory import MemoryCounters
from .messages import (
    BudgetExceededError,
    LimitsUnavailableError,
    RateHeaders,
    refusal,
    success_headers,
)
from .plan import Layout, Scope, ScopePlan, WindowClock, compile_scope, layout, merge
from .policy import LimitSet, Tier, parse_limit_set
from .redis import RedisCounters

__all__ = (
    "BudgetExceededError",
    "Limiter",
    "LimitsUnavailableError",
    "PolicySource",
    "Reservation",
    "Scope",
)

log = logging.getLogger("llmgw.limits")

#: Seconds between two "store unreachable" log lines while failing open.
_LOG_EVERY = 10.0
#: Compiled scope plans kept (oldest dropped first): keys, users, teams, sessions...
_MAX_PLANS = 50_000


class PolicySource(Protocol):
    """Per-entity limit sets (set through the admin API); ``None`` means "use the tier default".

    Called for every scope of every request: answer from memory. Returning the same
    object while a limit set is unchanged lets the limiter skip comparing it.
    """

    async def get(self, tier: Tier, name: str) -> LimitSet | None: ...


@dataclass(slots=True, kw_only=True)
class Reservation:
    """What one request holds until it settles."""

    token: str
    counters: list[Counter]
    layout: Layout
    backend: CounterBackend
    models: list[str]
    reserved_micros: int = 0
    reserved_tokens: int = 0
    #: Response headers: rate-limit state and soft-budget warnings.
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


@dataclass(slots=True)
class _Cached:
    """A compiled plan and the inputs it was compiled from."""

    explicit: LimitSet | None
    own: Any  # the key's raw ``metadata["limits"]``
    plan: ScopePlan | None


class Limiter:
    """Holds the counter store and the policy; one per application.

    ``defaults`` apply to every key, user, team... of a tier; ``source`` (optional) gives
    per-entity limit sets; a key's own ``identity.metadata["limits"]`` wins over both.
    Each layer overrides the one below field by field (budgets by period). A scope's
    compiled plan is reused until ``source`` or the key's limits answer differently;
    ``defaults`` are read when a plan is compiled, so change them by building a new limiter.
    """

    def __init__(
        self,
        counters: CounterBackend,
        *,
        defaults: Mapping[Tier, LimitSet] | None = None,
        source: PolicySource | None = None,
        prices: PriceTable | None = None,
        fail_open: bool = False,
        key_prefix: str = "llmgw:limits:",
        stream_lease: float = 3600.0,
        bytes_per_token: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.defaults = dict(defaults or {})
        self.source = source
        self.prices = prices or PriceTable()
        self.fail_open = fail_open
        self.key_prefix = key_prefix
        self.stream_lease = stream_lease
        self.bytes_per_token = bytes_per_token
        self.clock = clock
        self.local = MemoryCounters()
        self._last_store_log = 0.0
        # Lease tokens: unique across instances (random prefix) without a syscall each.
        self._token_prefix = secrets.token_hex(6) + ":"
        self._tokens = itertools.count()
        self._plans: dict[tuple[Tier, str], _Cached] = {}
        self._clocks: dict[str, WindowClock] = {}
        self._layouts: dict[tuple[object, ...], tuple[tuple[ScopePlan, ...], Layout]] = {}
        self._rate_headers = RateHeaders()
        self._worst_case = WorstCase(self.prices)
        self._settling: set[asyncio.Task[None]] = set()

    async def scopes(self, ctx: RequestContext) -> list[Scope]:
        """Every scope the request belongs to that has at least one limit."""
        return [p.scope for p in await self.plans(ctx)]

    async def plans(self, ctx: RequestContext) -> list[ScopePlan]:
        """The compiled plan of every limited scope the request belongs to."""
        out: list[ScopePlan] = []
        plan = await self._plan(Tier.GLOBAL, "*", None)
        if plan is not None:
            out.append(plan)
        ident = ctx.identity
        if ident is not None:
            own = ident.metadata.get("limits") if ident.metadata else None
            plan = await self._plan(Tier.KEY, ident.key_id, own)
            if plan is not None:
                out.append(plan)
            for tier, name in (
                (Tier.USER, ident.user),
                (Tier.TEAM, ident.team),
                (Tier.PROJECT, ident.project),
            ):
                if name:
                    plan = await self._plan(tier, name, None)
                    if plan is not None:
                        out.append(plan)
        if ctx.session_id:
            plan = await self._plan(Tier.SESSION, ctx.session_id, None)
            if plan is not None:
                out.append(plan)
        return out

    async def _plan(self, tier: Tier, name: str, own: Any) -> ScopePlan | None:
        source = self.source
        explicit = await source.get(tier, name) if source is not None else None
        default = self.defaults.get(tier)
        if explicit is None and own is None and default is None:
            return None
        cache_key = (tier, name)
        cached = self._plans.get(cache_key)
        if (
            cached is not None
            and (cached.explicit is explicit or cached.explicit == explicit)
            and (cached.own is own or cached.own == own)
        ):
            return cached.plan
        limits = self._effective(name, default, explicit, own)
        plan = None
        if limits is not None and not limits.empty:
            scope = Scope(tier=tier, name=name, limits=limits)
            plan = compile_scope(
                scope, self.key_prefix, self._clocks, stream_lease=self.stream_lease
            )
        if cached is None and len(self._plans) >= _MAX_PLANS:
            del self._plans[next(iter(self._plans))]
        self._plans[cache_key] = _Cached(explicit=explicit, own=own, plan=plan)
        return plan

    def _effective(
        self,
        name: str,
        default: LimitSet | None,
        explicit: LimitSet | None,
        own: Any,
    ) -> LimitSet | None:
        limits = default
        if explicit is not None:
            limits = explicit if limits is None else merge(explicit, limits)
        if own is not None:
            try:
                key_limits = parse_limit_set(own, "key.limits")
            except ValueError as exc:
                log.warning("ignoring invalid limits on key %s: %s", name, exc)
            else:
                limits = key_limits if limits is None else merge(key_limits, limits)
        return limits

    async def reserve(
        self, ctx: RequestContext, body: dict[str, Any], models: list[str], *, full: bool = True
    ) -> Reservation | None:
        """Charge the worst case or raise; ``full=False`` counts the request only (token
        counting is free and holds no stream). ``None`` when no limit applies."""
        plans = await self.plans(ctx)
        if not plans:
            return None
        now = self.clock()
        raw = ctx.raw_body or b""
        est = None
        if full:
            # First the O(1) bound; base64 images are only looked for if it would refuse.
            est = estimate_request(
                body,
                raw,
                models,
                self.prices,
                bytes_per_token=self.bytes_per_token,
                images=False,
                worst_case=self._worst_case,
            )
        res = self._build(plans, est, models, now)
        if res is None:
            return None
        seen = await self._charge(res, now)
        if seen.refused is not None and est is not None and b'"base64"' in raw:
            tight = estimate_request(
                body,
                raw,
                models,
                self.prices,
                bytes_per_token=self.bytes_per_token,
                worst_case=self._worst_case,
            )
            if tight.micros < est.micros or tight.tokens < est.tokens:
                res = self._build(plans, tight, models, now)
                assert res is not None
                seen = await self._charge(res, now)
        if seen.refused is not None:
            raise refusal(seen, res.counters, res.layout.slots, now)
        res.headers = success_headers(seen, res.counters, res.layout, now, self._rate_headers)
        return res

    def _build(
        self, plans: list[ScopePlan], est: Estimate | None, models: list[str], now: float
    ) -> Reservation | None:
        full = est is not None
        # Keyed by the plans' ids: the entry holds the plans, so no id is reused meanwhile.
        key = (full, *map(id, plans))
        entry = self._layouts.get(key)
        if entry is None:
            if len(self._layouts) >= _MAX_PLANS:
                del self._layouts[next(iter(self._layouts))]
            entry = self._layouts[key] = (tuple(plans), layout(plans, full=full))
        lay = entry[1]
        if not lay.slots:
            return None
        amounts = (1, est.tokens, est.micros) if est is not None else (1, 0, 0)
        counters = [s.counter(amounts[a], now) for s, a in zip(lay.slots, lay.amounts, strict=True)]
        return Reservation(
            token=f"{self._token_prefix}{next(self._tokens)}",
            counters=counters,
            layout=lay,
            backend=self.counters,
            models=models,
            reserved_micros=est.micros if est else 0,
            reserved_tokens=est.tokens if est else 0,
        )

    async def _charge(self, res: Reservation, now: float) -> Reserved:
        """Reserve on the shared store, or as ``failure_mode`` says when it is unreachable."""
        try:
            return await self.counters.reserve(res.counters, res.token, now)
        except StoreUnavailableError as exc:
            if not self.fail_open:
                log.error("limits store unavailable, refusing (fail closed): %s", exc)
                raise LimitsUnavailableError(
                    "the gateway's limits store is unavailable; try again shortly"
                ) from None
            if now - self._last_store_log >= _LOG_EVERY:
                self._last_store_log = now
                log.warning("limits store unavailable, counting locally (fail open): %s", exc)
            res.backend = self.local
            return await self.local.reserve(res.counters, res.token, now)

    def settle_soon(self, res: Reservation, ctx: RequestContext) -> None:
        """Settle without making the caller wait: at once for counters in this process,
        queued for Redis (carried by the next reservation's script, or flushed within
        ``settle_delay``; a failure is logged), else in a task that :meth:`drain` awaits.

        Not awaited by the request because aiohttp serves a keep-alive connection's next
        request only after the previous handler returns: awaiting a Redis round trip here
        added it to the next request's time to first byte.
        """
        if res.settled:
            return
        backend = res.backend
        if isinstance(backend, MemoryCounters | RedisCounters | LeasedCounters):
            res.settled = True
            backend.settle_nowait(res.counters, self._deltas(res, ctx), res.token)
        else:
            task = asyncio.ensure_future(self.settle(res, ctx))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def drain(self) -> None:
        """Wait for the settles still in flight (call before closing the counters)."""
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    async def settle(self, res: Reservation, ctx: RequestContext) -> None:
        """Correct every charge to the real usage and release the stream lease (idempotent)."""
        if res.settled:
            return
        res.settled = True
        deltas = self._deltas(res, ctx)
        try:
            await res.backend.settle(res.counters, deltas, res.token)
        except StoreUnavailableError as exc:
            log.error(
                "could not settle request %s (leases expire on their own): %s", ctx.request_id, exc
            )

    def _deltas(self, res: Reservation, ctx: RequestContext) -> list[int]:
        usage = ctx.usage
        cost = ctx.cost_micros  # metering priced it already when it ran
        if cost is None:
            model = ctx.upstream_model or (res.models[0] if res.models else None)
            cost = self.prices.cost_micros(model, usage) if model else 0
        tokens = usage.input_tokens + usage.cache_creation_input_tokens + usage.output_tokens
        ctx.extras["llmgw.limits.settled_micros"] = cost
        counters = res.counters
        deltas = [0] * len(counters)
        for i in res.layout.tpm:
            deltas[i] = tokens - counters[i].amount
        for i in res.layout.usd:
            deltas[i] = cost - counters[i].amount
        return deltas
