"""One request's attempt plan: the candidate order, and the hooks the relay calls per try.

The routing middleware builds an :class:`AttemptPlan` and puts it on the context
(``ctx.routing``); the relay asks it before each attempt (wait how long? skip?), takes and
gives back an in-flight slot, and reports each outcome. Without the middleware the relay
makes a plain plan from the route alone (no shared state: no caps, no breaker).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from ..config import UpstreamConfig
from ..routes import Deployment, Route, RoutePolicy
from .health import HealthBoard, Slot
from .retry import Backoff
from .strategies import STRATEGIES

__all__ = ("AttemptPlan", "order_candidates")

_NONE_RESTING: frozenset[str] = frozenset()


def order_candidates(
    route: Route, board: HealthBoard, rng: random.Random
) -> tuple[list[Deployment], frozenset[str]]:
    """The deployments to try, in order, and the names that were resting at planning time.

    Deployments available now come first, in the route's strategy order; resting ones
    (cooldown, ``retry-after``, probe already out) follow, soonest-back first, as a last
    resort: a maybe-failing attempt beats a certain error. The list then repeats once per
    configured retry; the plan enforces the retry budget, so skipped entries cost nothing.
    """
    policy = route.policy
    now = board.now()
    deployments: Sequence[Deployment] = route.deployments
    if len(deployments) == 1:  # most routes: nothing to order
        only = deployments[0]
        resting_one = _NONE_RESTING if board.available(only.name, now) else frozenset((only.name,))
        return [only] * (policy.retries + 1), resting_one
    healthy: list[Deployment] = []
    resting: list[Deployment] = []
    for d in deployments:
        (healthy if board.available(d.name, now) else resting).append(d)
    order = STRATEGIES[policy.strategy](healthy, board, rng) if healthy else []
    if resting:
        state = board.get
        resting.sort(key=lambda d: max(state(d.name).open_until, state(d.name).retry_until))
        order.extend(resting)
    if not policy.failover:
        del order[1:]
    if policy.retries:
        order *= policy.retries + 1
    return order, frozenset(d.name for d in resting) if resting else _NONE_RESTING


class AttemptPlan:
    """The relay's hooks for one request; cheap to build, holds no I/O."""

    __slots__ = (
        "_retries",
        "_slot",
        "_tries",
        "backoff",
        "board",
        "deployments",
        "policy",
        "resting",
        "rng",
    )

    def __init__(
        self,
        *,
        policy: RoutePolicy,
        board: HealthBoard | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        deployments: Sequence[Deployment] = (),
        resting: frozenset[str] = frozenset(),
    ) -> None:
        self.policy = policy
        self.board = board
        self.backoff = backoff or Backoff()
        self.rng = rng
        self.deployments = deployments
        self.resting = resting
        # Tries per deployment name: none yet, the one name tried once, or a dict from the
        # second attempt on (most requests make one: no dict held for their whole stream).
        self._tries: dict[str, int] | str | None = None
        self._slot: Slot | None = None  # attempts run one after another: one slot out
        self._retries = 0

    @property
    def retries(self) -> int:
        """Retries made so far (attempts on a deployment already tried in this request)."""
        return self._retries

    def upstream_config(self, cfg: UpstreamConfig) -> UpstreamConfig:
        """``cfg`` with this route's timeouts applied."""
        p = self.policy
        if p.connect_timeout is None and p.first_byte_timeout is None and p.idle_timeout is None:
            return cfg
        return dataclasses.replace(
            cfg,
            connect_timeout=p.connect_timeout or cfg.connect_timeout,
            first_byte_timeout=p.first_byte_timeout or cfg.first_byte_timeout,
            idle_timeout=p.idle_timeout or cfg.idle_timeout,
        )

    def before(self, deployment: Deployment) -> float | None:
        """Seconds to wait before trying ``deployment``, or ``None`` to skip it.

        A first try goes at once: failover is immediate. A retry (the deployment was tried
        already) waits an exponential, jittered backoff and at least the deployment's
        ``retry-after``; it is skipped when the retry budget is spent, when that
        ``retry-after`` is longer than ``max_retry_after``, or when the deployment is
        cooling down while another deployment of the route is not, or has more consecutive
        failures than another one that is cooling too: when everything is down, the retry
        budget goes to the deployment that failed least, not to one that is plainly dead.
        """
        name = deployment.name
        if not self._tried(name):
            return 0.0
        if self._retries >= self.policy.retries:
            return None
        if self.rng is None:
            self.rng = random.Random()  # only a retry needs one; most requests never do
        board = self.board
        if board is None:
            return self.backoff.delay(self._retries, None, self.rng)
        now = board.now()
        if board.cooling(name, now):
            failures = board.get(name).failures
            for d in self.deployments:
                if not board.cooling(d.name, now) or board.get(d.name).failures < failures:
                    return None
        rest = board.get(name).retry_until - now
        return self.backoff.delay(self._retries, rest if rest > 0 else None, self.rng)

    def acquire(self, deployment: Deployment) -> bool:
        """Take an in-flight slot on ``deployment``; ``False`` means skip it (cap reached, or
        its breaker's one probe is already out)."""
        name = deployment.name
        tries = self._tried(name)
        if self.board is not None:
            # A last resort or a retry goes through the breaker, never through the cap.
            force = tries > 0 or name in self.resting
            slot = self.board.acquire(deployment, force=force)
            if slot is Slot.REFUSED:
                return False
            self._slot = slot
        if tries:
            self._retries += 1
        counts = self._tries
        if counts is None:
            self._tries = name
        else:
            if isinstance(counts, str):
                counts = self._tries = {counts: 1}
            counts[name] = tries + 1
        return True

    def _tried(self, name: str) -> int:
        counts = self._tries
        if counts is None:
            return 0
        if isinstance(counts, str):
            return 1 if counts == name else 0
        return counts.get(name, 0)

    def release(self, deployment: Deployment) -> None:
        """Give back the slot taken by the matching :meth:`acquire`."""
        slot, self._slot = self._slot, None
        if self.board is not None and slot is not None:
            self.board.release(deployment, slot)

    def succeeded(self, deployment: Deployment, ttfb: float) -> None:
        """The upstream answered in ``ttfb`` seconds with a status that is not its fault."""
        if self.board is not None:
            self.board.success(deployment.name, ttfb)

    def failed(self, deployment: Deployment, retry_after: float | None = None) -> None:
        """Unreachable, timed out, a retryable status, or cut mid-stream."""
        if self.board is not None:
            self.board.failure(
                deployment.name, cooldown=self.policy.cooldown, retry_after=retry_after
            )
