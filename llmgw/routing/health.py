"""Live per-deployment state: streams in flight, recent latency, and a cooldown breaker.

The breaker is the usual three-state one, folded into two numbers. ``failures`` counts
consecutive failures; reaching ``failure_threshold`` trips the breaker and sets
``open_until`` to now + cooldown. Until then the deployment is out of rotation (routing
tries it only as a last resort, when everything else failed); after that, exactly one live
request is let through as a probe (half-open). The probe's success closes the breaker, its
failure opens it for another cooldown. A ``retry-after`` from the upstream sets
``retry_until``, so every request honours it, not just the one that got it.

Live traffic is the probe on purpose: a synthetic request would cost tokens, and a probe
that fails is failed over like any other attempt, so no client sees it.

State is keyed by deployment *name*, so it survives a route reload, and in-flight counts
taken before a reload are released against the same entry afterwards.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..routes import Deployment

__all__ = ("DeploymentHealth", "HealthBoard", "Slot")


class Slot(enum.Enum):
    """What :meth:`HealthBoard.acquire` granted."""

    REFUSED = "refused"
    TAKEN = "taken"
    #: Taken as the half-open breaker's one probe.
    PROBE = "probe"


@dataclass(slots=True)
class DeploymentHealth:
    """Mutable counters for one deployment (read by strategies, written by the relay)."""

    in_flight: int = 0
    #: Exponentially weighted moving average of seconds to the upstream's status line.
    ttfb_ewma: float | None = None
    failures: int = 0
    #: End of the cooldown once the breaker tripped (monotonic seconds).
    open_until: float = 0.0
    #: End of the rest the upstream asked for with ``retry-after``.
    retry_until: float = 0.0
    probing: bool = False
    #: How many times the breaker opened (for metrics and tests).
    trips: int = 0


class HealthBoard:
    """Every deployment's :class:`DeploymentHealth`, shared by all requests of one app.

    All methods are synchronous and do no I/O: they run on the event loop between awaits,
    so no lock is needed.
    """

    __slots__ = ("_clock", "_states", "ewma_alpha", "failure_threshold")

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        ewma_alpha: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.ewma_alpha = ewma_alpha
        self._clock = clock
        self._states: dict[str, DeploymentHealth] = {}

    def get(self, name: str) -> DeploymentHealth:
        """The deployment's state, created on first use. (The per-request methods below
        try the dict first: a method call less each, four per request.)"""
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = DeploymentHealth()
        return state

    def now(self) -> float:
        return self._clock()

    def tripped(self, name: str) -> bool:
        """Whether the breaker is open or half-open (the next success closes it)."""
        return self.get(name).failures >= self.failure_threshold

    def available(self, name: str, now: float) -> bool:
        """Pickable now: not resting, and not half-open with a probe already out."""
        state = self._states.get(name) or self.get(name)
        if now < state.open_until or now < state.retry_until:
            return False
        return not (state.probing and state.failures >= self.failure_threshold)

    def cooling(self, name: str, now: float) -> bool:
        """Tripped and still inside its cooldown."""
        state = self.get(name)
        return state.failures >= self.failure_threshold and now < state.open_until

    def acquire(self, deployment: Deployment, *, force: bool = False) -> Slot:
        """Count one more stream on ``deployment``.

        Refused when it is at its ``max_concurrency``, or when its breaker is half-open and
        the probe is already out. ``force`` (every deployment of the route is out) skips the
        breaker but never the cap.
        """
        state = self._states.get(deployment.name) or self.get(deployment.name)
        cap = deployment.max_concurrency
        if cap is not None and state.in_flight >= cap:
            return Slot.REFUSED
        slot = Slot.TAKEN
        if state.failures >= self.failure_threshold and not force:
            if state.probing:
                return Slot.REFUSED
            state.probing = True
            slot = Slot.PROBE
        state.in_flight += 1
        return slot

    def release(self, deployment: Deployment, slot: Slot) -> None:
        state = self._states.get(deployment.name) or self.get(deployment.name)
        state.in_flight = max(0, state.in_flight - 1)
        if slot is Slot.PROBE:
            state.probing = False

    def success(self, name: str, ttfb: float) -> None:
        """The upstream answered (any status that is not the deployment's fault)."""
        state = self._states.get(name) or self.get(name)
        state.failures = 0
        state.probing = False
        prev = state.ttfb_ewma
        a = self.ewma_alpha
        state.ttfb_ewma = ttfb if prev is None else a * ttfb + (1 - a) * prev

    def failure(self, name: str, *, cooldown: float, retry_after: float | None = None) -> None:
        """The deployment failed (unreachable, timed out, 429/529/5xx, dropped mid-stream)."""
        state = self.get(name)
        now = self._clock()
        state.failures += 1
        state.probing = False
        if state.failures >= self.failure_threshold:
            if state.failures == self.failure_threshold:
                state.trips += 1
            state.open_until = now + cooldown
        if retry_after is not None:
            state.retry_until = max(state.retry_until, now + retry_after)
