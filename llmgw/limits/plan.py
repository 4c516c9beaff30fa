"""Which counters a request charges, worked out once per scope instead of once per request.

A :class:`ScopePlan` is a scope's limit set compiled to counter templates (key strings,
limits, metric) and is cached by the limiter until the limit set changes. A
:class:`WindowClock` hands out the current :class:`~llmgw.limits.policy.Window` of one
period and recomputes it only when the clock crosses into the next bucket (every 3 s for
a minute, once a day for ``daily``), so a request does no date math.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .counters import Counter, CounterKind
from .policy import Budget, LimitSet, Period, Tier, Window, sliding_window

__all__ = (
    "MINUTE",
    "Layout",
    "Scope",
    "ScopePlan",
    "Slot",
    "WindowClock",
    "compile_scope",
    "layout",
    "merge",
)

MINUTE = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    tier: Tier
    name: str
    limits: LimitSet

    def describe(self) -> str:
        if self.tier is Tier.GLOBAL:
            return "the gateway-wide"
        return f"{self.tier.value} {self.name!r}"


class WindowClock:
    """The current window of one period, cached while ``now`` stays in the same bucket."""

    __slots__ = ("_since", "_until", "_window", "period")

    def __init__(self, period: Period | None) -> None:
        #: ``None`` is the one-minute sliding window of rpm and tpm.
        self.period = period
        self._since = self._until = 0.0
        self._window: Window | None = None

    def at(self, now: float) -> Window:
        window = self._window
        if window is not None and self._since <= now < self._until:
            return window
        period = self.period
        window = sliding_window(MINUTE, now) if period is None else period.window(now)
        if window.reset_at is None:
            self._since = window.bucket * window.width
            self._until = self._since + window.width
        else:
            self._since, self._until = float(window.bucket), window.reset_at
        self._window = window
        return window


@dataclass(slots=True, kw_only=True)
class Slot:
    """One counter of a scope: everything but the amount and the bucket, which vary.

    Not frozen: it keeps the counter it last built, which a request charging one unit
    (rpm, a stream lease) in the same bucket can share instead of building its own.
    """

    key: str
    kind: CounterKind
    limit: int
    metric: str  # rpm | tpm | concurrent | usd
    scope: Scope
    #: Where window charges land; ``None`` for the stream lease.
    clock: WindowClock | None = None
    budget: Budget | None = None
    #: A lease's life (the window's TTL comes from the clock).
    ttl: float = 0.0
    last: Counter | None = None

    def counter(self, amount: int, now: float) -> Counter:
        last = self.last
        clock = self.clock
        if clock is None:
            if last is None or last.amount != amount:
                last = self.last = Counter(
                    key=self.key, kind=self.kind, limit=self.limit, amount=amount, ttl=self.ttl
                )
            return last
        w = clock.at(now)
        if last is not None and last.amount == amount and last.bucket == w.bucket:
            return last
        # A calendar window must live until it ends (a shared counter's TTL may run over
        # by the seconds since it was built: harmless, the next period prunes it).
        ttl = w.ttl if w.reset_at is None else w.reset_at - now + 60
        last = self.last = Counter(
            key=self.key,
            kind=CounterKind.WINDOW,
            limit=self.limit,
            amount=amount,
            bucket=w.bucket,
            oldest=w.oldest,
            ttl=ttl,
        )
        return last


@dataclass(frozen=True, slots=True, kw_only=True)
class ScopePlan:
    """A scope's slots: budgets (checked first: their refusal is the one to show), then
    rates; ``rpm`` alone is what a free request (token counting) charges."""

    scope: Scope
    budgets: tuple[Slot, ...]
    rates: tuple[Slot, ...]
    rpm: Slot | None


def compile_scope(
    scope: Scope, prefix: str, clocks: dict[str, WindowClock], *, stream_lease: float
) -> ScopePlan:
    """``scope``'s slots; ``clocks`` (by period slug, ``""`` for the minute) is shared by
    every scope so each period's window is computed once per bucket."""
    ls = scope.limits
    base = f"{prefix}{scope.tier.value}:{scope.name}:"
    minute = clocks.get("")
    if minute is None:
        minute = clocks[""] = WindowClock(None)
    rates: list[Slot] = []
    rpm = None
    if ls.rpm is not None:
        rpm = Slot(
            key=base + "rpm",
            kind=CounterKind.WINDOW,
            limit=ls.rpm,
            metric="rpm",
            scope=scope,
            clock=minute,
        )
        rates.append(rpm)
    if ls.tpm is not None:
        rates.append(
            Slot(
                key=base + "tpm",
                kind=CounterKind.WINDOW,
                limit=ls.tpm,
                metric="tpm",
                scope=scope,
                clock=minute,
            )
        )
    if ls.concurrent is not None:
        rates.append(
            Slot(
                key=base + "concurrent",
                kind=CounterKind.LEASE,
                limit=ls.concurrent,
                metric="concurrent",
                scope=scope,
                ttl=stream_lease,
            )
        )
    budgets = []
    for b in ls.budgets:
        slug = b.period.slug
        clock = clocks.get(slug)
        if clock is None:
            clock = clocks[slug] = WindowClock(b.period)
        budgets.append(
            Slot(
                key=f"{base}usd:{slug}",
                kind=CounterKind.WINDOW,
                limit=b.micros,
                metric="usd",
                scope=scope,
                clock=clock,
                budget=b,
            )
        )
    return ScopePlan(scope=scope, budgets=tuple(budgets), rates=tuple(rates), rpm=rpm)


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """The slots a request in some set of scopes charges, in order, and where each metric
    sits: computed once per set of scopes so building, settling and reporting skip
    the slots they do not care about."""

    slots: tuple[Slot, ...]
    #: What each slot charges: 0 one unit, 1 the tokens, 2 the micro-dollars.
    amounts: tuple[int, ...]
    #: Index of every slot per metric; ``warn`` are the budgets with a soft threshold.
    rpm: tuple[int, ...]
    tpm: tuple[int, ...]
    usd: tuple[int, ...]
    warn: tuple[int, ...]


def layout(plans: Sequence[ScopePlan], *, full: bool) -> Layout:
    """``full=False``: the requests-per-minute slots only (a free request)."""
    slots: list[Slot] = []
    if full:
        # Budgets first: when a budget and a rate limit both refuse, the budget's answer
        # (shown, not retried) is the one the client should get.
        for p in plans:
            slots += p.budgets
        for p in plans:
            slots += p.rates
    else:
        slots = [p.rpm for p in plans if p.rpm is not None]

    def where(metric: str) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(slots) if s.metric == metric)

    warn = tuple(i for i in where("usd") if _warns(slots[i].budget))
    charge = {"tpm": 1, "usd": 2}
    return Layout(
        slots=tuple(slots),
        amounts=tuple(charge.get(s.metric, 0) for s in slots),
        rpm=where("rpm"),
        tpm=where("tpm"),
        usd=where("usd"),
        warn=warn,
    )


def _warns(budget: Budget | None) -> bool:
    return budget is not None and budget.warn_at is not None


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
