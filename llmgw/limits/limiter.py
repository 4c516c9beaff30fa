"""Reserve before forwarding, settle after: the limiter behind ``limits_middleware``.

For each scope a request belongs to (global, key, user, team, project, Claude Code
session) it charges requests-per-minute, the worst-case tokens-per-minute, an open-stream
lease and the worst-case cost against every budget, in one atomic step. After the answer
(any outcome) it corrects each charge to what was really used and releases the lease.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ..context import RequestContext
from ..errors import InvalidRequestError, LlmgwError, RateLimitError
from ..pricing import PriceTable
from .counters import Counter, CounterBackend, CounterKind, Reserved, StoreUnavailableError
from .estimate import Estimate, estimate_request
from .memory import MemoryCounters
from .policy import Budget, LimitSet, Tier, Window, format_usd, parse_limit_set, sliding_window

__all__ = (
    "BudgetExceededError",
    "Limiter",
    "LimitsUnavailableError",
    "PolicySource",
    "Reservation",
    "Scope",
)

log = logging.getLogger("llmgw.limits")

_MINUTE = 60.0
#: Seconds between two "store unreachable" log lines while failing open.
_LOG_EVERY = 10.0


class BudgetExceededError(InvalidRequestError):
    """400 ``invalid_request_error``: Claude Code shows the message and does not retry
    (it retries 429 and 5xx up to ten times; 403 would be shown as "Failed to authenticate")."""


class LimitsUnavailableError(LlmgwError):
    """503: the shared counter store is unreachable and the limiter fails closed."""

    status_code = 503


class PolicySource(Protocol):
    """Per-entity limit sets (set through the admin API); ``None`` means "use the tier default"."""

    async def get(self, tier: Tier, name: str) -> LimitSet | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    tier: Tier
    name: str
    limits: LimitSet

    def describe(self) -> str:
        if self.tier is Tier.GLOBAL:
            return "the gateway-wide"
        return f"{self.tier.value} {self.name!r}"


@dataclass(slots=True, kw_only=True)
class _Meta:
    scope: Scope
    metric: str  # rpm | tpm | concurrent | budget
    window: Window | None = None
    budget: Budget | None = None


@dataclass(slots=True, kw_only=True)
class Reservation:
    """What one request holds until it settles."""

    token: str
    counters: list[Counter]
    metas: list[_Meta]
    backend: CounterBackend
    models: list[str]
    reserved_micros: int = 0
    reserved_tokens: int = 0
    #: Response headers: rate-limit state and soft-budget warnings.
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


class Limiter:
    """Holds the counter store and the policy; one per application.

    ``defaults`` apply to every key, user, team... of a tier; ``source`` (optional) gives
    per-entity overrides; a key's own ``identity.metadata["limits"]`` wins over both. An
    override replaces the default field by field (budgets by period).
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

    async def scopes(self, ctx: RequestContext) -> list[Scope]:
        """Every scope the request belongs to that has at least one limit."""
        named: list[tuple[Tier, str]] = [(Tier.GLOBAL, "*")]
        ident = ctx.identity
        if ident is not None:
            named.append((Tier.KEY, ident.key_id))
            for tier, name in ((Tier.USER, ident.user), (Tier.TEAM, ident.team)):
                if name:
                    named.append((tier, name))
            if ident.project:
                named.append((Tier.PROJECT, ident.project))
        if ctx.session_id:
            named.append((Tier.SESSION, ctx.session_id))
        out = []
        for tier, name in named:
            limits = await self._limits_for(ctx, tier, name)
            if limits is not None and not limits.empty:
                out.append(Scope(tier=tier, name=name, limits=limits))
        return out

    async def _limits_for(self, ctx: RequestContext, tier: Tier, name: str) -> LimitSet | None:
        default = self.defaults.get(tier)
        explicit: LimitSet | None = None
        if tier is Tier.KEY and ctx.identity is not None and "limits" in ctx.identity.metadata:
            try:
                explicit = parse_limit_set(ctx.identity.metadata["limits"], "key.limits")
            except ValueError as exc:
                log.warning("ignoring invalid limits on key %s: %s", name, exc)
        if explicit is None and self.source is not None and tier is not Tier.GLOBAL:
            explicit = await self.source.get(tier, name)
        if explicit is None:
            return default
        return explicit if default is None else merge(explicit, default)

    async def reserve(
        self, ctx: RequestContext, body: dict[str, Any], models: list[str], *, full: bool = True
    ) -> Reservation | None:
        """Charge the worst case or raise; ``full=False`` counts the request only (token
        counting is free and holds no stream). ``None`` when no limit applies."""
        scopes = await self.scopes(ctx)
        if not scopes:
            return None
        now = self.clock()
        raw = ctx.raw_body or b""
        est = None
        if full:
            # First the O(1) bound; base64 images are only looked for if it would refuse.
            est = estimate_request(
                body, raw, models, self.prices, bytes_per_token=self.bytes_per_token, images=False
            )
        res = self._build(scopes, est, models, now)
        if res is None:
            return None
        seen = await self._charge(res, now)
        if seen.refused is not None and est is not None and b'"base64"' in raw:
            tight = estimate_request(
                body, raw, models, self.prices, bytes_per_token=self.bytes_per_token
            )
            if tight.micros < est.micros or tight.tokens < est.tokens:
                res = self._build(scopes, tight, models, now)
                assert res is not None
                seen = await self._charge(res, now)
        if seen.refused is not None:
            raise self._refusal(seen, res, now)
        self._success_headers(seen, res, now)
        return res

    def _build(
        self, scopes: list[Scope], est: Estimate | None, models: list[str], now: float
    ) -> Reservation | None:
        minute = sliding_window(_MINUTE, now)
        # Budgets first: when a budget and a rate limit both refuse, the budget's answer
        # (shown, not retried) is the one the client should get.
        slots: list[tuple[Counter, _Meta]] = []
        windows: dict[str, Window] = {}
        rates: list[tuple[Counter, _Meta]] = []
        for scope in scopes:
            ls = scope.limits
            prefix = f"{self.key_prefix}{scope.tier.value}:{scope.name}:"
            if ls.rpm is not None:
                rates.append(_window(prefix + "rpm", ls.rpm, 1, minute, scope, "rpm"))
            if est is None:
                continue
            if ls.tpm is not None:
                rates.append(_window(prefix + "tpm", ls.tpm, est.tokens, minute, scope, "tpm"))
            if ls.concurrent is not None:
                lease = Counter(
                    key=prefix + "concurrent",
                    kind=CounterKind.LEASE,
                    limit=ls.concurrent,
                    amount=1,
                    ttl=self.stream_lease,
                )
                rates.append((lease, _Meta(scope=scope, metric="concurrent")))
            for b in ls.budgets:
                slug = b.period.slug
                w = windows.get(slug)
                if w is None:
                    w = windows[slug] = b.period.window(now)
                slots.append(
                    _window(f"{prefix}usd:{slug}", b.micros, est.micros, w, scope, "usd", b)
                )
        slots += rates
        if not slots:
            return None
        return Reservation(
            token=f"{self._token_prefix}{next(self._tokens)}",
            counters=[c for c, _ in slots],
            metas=[m for _, m in slots],
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

    async def settle(self, res: Reservation, ctx: RequestContext) -> None:
        """Correct every charge to the real usage and release the stream lease (idempotent)."""
        if res.settled:
            return
        res.settled = True
        usage = ctx.usage
        model = ctx.upstream_model or (res.models[0] if res.models else None)
        cost = self.prices.cost_micros(model, usage) if model else 0
        tokens = usage.input_tokens + usage.cache_creation_input_tokens + usage.output_tokens
        deltas = []
        for c, meta in zip(res.counters, res.metas, strict=True):
            if meta.metric == "tpm":
                deltas.append(tokens - c.amount)
            elif meta.metric == "usd":
                deltas.append(cost - c.amount)
            else:
                deltas.append(0)
        ctx.extras["llmgw.limits.settled_micros"] = cost
        try:
            await res.backend.settle(res.counters, deltas, res.token)
        except StoreUnavailableError as exc:
            log.error(
                "could not settle request %s (leases expire on their own): %s", ctx.request_id, exc
            )

    def _refusal(self, seen: Reserved, res: Reservation, now: float) -> LlmgwError:
        i = seen.refused
        assert i is not None
        c, meta = res.counters[i], res.metas[i]
        used, scope = seen.used[i], meta.scope
        if meta.metric == "usd":
            assert meta.budget is not None and meta.window is not None
            return BudgetExceededError(
                f"Budget exhausted: {scope.describe()} {meta.budget.period.label} budget of "
                f"{format_usd(c.limit)} has {format_usd(max(c.limit - used, 0))} left "
                f"({format_usd(used)} spent or reserved) and this request may cost up to "
                f"{format_usd(c.amount)}. {_resets(meta.window, seen.first[i], now)}"
            )
        if meta.metric == "concurrent":
            return RateLimitError(
                f"Rate limited: {scope.describe()} limit of {c.limit} concurrent requests is "
                "reached; retry when one finishes.",
                retry_after=1,
            )
        assert meta.window is not None
        retry = meta.window.reset_after(seen.first[i], now)
        what = "requests" if meta.metric == "rpm" else "tokens"
        headers = _rate_headers(what, c.limit, used, now + retry)
        detail = "" if meta.metric == "rpm" else f" (this request may use up to {c.amount})"
        return RateLimitError(
            f"Rate limited: {scope.describe()} limit of {c.limit} {what} per minute is "
            f"reached{detail}; retry in {max(1, round(retry))} s.",
            retry_after=retry,
            headers=headers,
        )

    def _success_headers(self, seen: Reserved, res: Reservation, now: float) -> None:
        tightest: dict[str, tuple[int, int, float]] = {}
        for i, (c, meta) in enumerate(zip(res.counters, res.metas, strict=True)):
            used = seen.used[i]
            if meta.metric in ("rpm", "tpm"):
                assert meta.window is not None
                what = "requests" if meta.metric == "rpm" else "tokens"
                remaining = c.limit - used
                if what not in tightest or remaining < tightest[what][1]:
                    reset = now + meta.window.reset_after(seen.first[i], now)
                    tightest[what] = (c.limit, remaining, reset)
            elif meta.metric == "usd" and meta.budget is not None:
                soft = meta.budget.soft_micros
                before = used - c.amount
                if soft is not None and before >= soft:
                    text = (
                        f"{meta.scope.describe()} {meta.budget.period.label} budget: "
                        f"{format_usd(before)} of {format_usd(c.limit)} used"
                    )
                    log.warning("soft budget threshold passed: %s", text)
                    res.headers["x-llmgw-budget-warning"] = _ascii(text)
        for what, (limit, remaining, reset) in tightest.items():
            res.headers.update(_rate_headers(what, limit, limit - remaining, reset))


def _window(
    key: str,
    limit: int,
    amount: int,
    window: Window,
    scope: Scope,
    metric: str,
    budget: Budget | None = None,
) -> tuple[Counter, _Meta]:
    counter = Counter(
        key=key,
        kind=CounterKind.WINDOW,
        limit=limit,
        amount=amount,
        bucket=window.bucket,
        oldest=window.oldest,
        ttl=window.ttl,
    )
    return counter, _Meta(scope=scope, metric=metric, window=window, budget=budget)


def merge(explicit: LimitSet, default: LimitSet) -> LimitSet:
    """``explicit`` over ``default`` field by field; budgets by period."""
    budgets = {b.period.slug: b for b in default.budgets}
    budgets.update({b.period.slug: b for b in explicit.budgets})
    return LimitSet(
        rpm=explicit.rpm if explicit.rpm is not None else default.rpm,
        tpm=explicit.tpm if explicit.tpm is not None else default.tpm,
        concurrent=explicit.concurrent if explicit.concurrent is not None else default.concurrent,
        budgets=tuple(budgets.values()),
    )


def _rate_headers(what: str, limit: int, used: int, reset: float) -> dict[str, str]:
    prefix = f"anthropic-ratelimit-{what}"
    return {
        f"{prefix}-limit": str(limit),
        f"{prefix}-remaining": str(max(limit - used, 0)),
        f"{prefix}-reset": _rfc3339(reset),
    }


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
