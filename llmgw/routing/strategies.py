"""How a route orders its deployments for one request (pure, no I/O, a few microseconds).

Each strategy returns *every* deployment it was given, best first: the first is the pick,
the rest is the failover order. Ties are broken at random so equal deployments share load.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from ..routes import Deployment
from .health import HealthBoard

__all__ = ("STRATEGIES", "Strategy", "latency", "least_inflight", "weighted")

Strategy = Callable[[Sequence[Deployment], HealthBoard, random.Random], list[Deployment]]


def weighted(
    deployments: Sequence[Deployment], board: HealthBoard, rng: random.Random
) -> list[Deployment]:
    """A weighted random permutation: the first is picked with probability ∝ weight.

    Efraimidis-Spirakis keys (``u ** (1/w)``, largest first) give the whole failover order
    from one random number per deployment. Weight 0 means "fallback only".
    """
    if len(deployments) == 1:
        return [deployments[0]]
    keyed = [
        (rng.random() ** (1.0 / d.weight) if d.weight > 0 else -rng.random(), i)
        for i, d in enumerate(deployments)
    ]
    keyed.sort(reverse=True)
    return [deployments[i] for _, i in keyed]


def least_inflight(
    deployments: Sequence[Deployment], board: HealthBoard, rng: random.Random
) -> list[Deployment]:
    """Fewest open streams per unit of weight first."""
    keyed = [
        (board.get(d.name).in_flight / (d.weight or 1e-9), rng.random(), i)
        for i, d in enumerate(deployments)
    ]
    keyed.sort()
    return [deployments[i] for *_, i in keyed]


def latency(
    deployments: Sequence[Deployment], board: HealthBoard, rng: random.Random
) -> list[Deployment]:
    """Lowest recent time to first byte first; a deployment never measured goes first,
    so every deployment gets a sample before the averages decide."""
    keyed = []
    for i, d in enumerate(deployments):
        ewma = board.get(d.name).ttfb_ewma
        keyed.append((-1.0 if ewma is None else ewma, rng.random(), i))
    keyed.sort()
    return [deployments[i] for *_, i in keyed]


STRATEGIES: dict[str, Strategy] = {
    "weighted": weighted,
    "least_inflight": least_inflight,
    "latency": latency,
}
