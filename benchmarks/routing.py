"""What routing adds to a request's decision path: `python benchmarks/routing.py`.

Measures, per request, everything routing does that the relay would not do anyway: resolve
the model (exact name, alias, pattern), order the deployments by the route's strategy, build
the attempt plan, and the relay's per-attempt hooks (before, acquire, succeeded, release).
No I/O is involved, so this is the whole of routing's cost on time to first byte; the budget
is 0.05 ms (50 µs) at the median.
"""

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmgw.providers import AnthropicProvider
from llmgw.routes import Deployment, Route, RoutePolicy, RouteTable
from llmgw.routing.health import HealthBoard
from llmgw.routing.plan import AttemptPlan, order_candidates
from llmgw.routing.retry import Backoff

BATCH = 2_000
BATCHES = 30
BUDGET_US = 50.0


def table(strategy: str, width: int) -> RouteTable:
    deployments = tuple(
        Deployment(
            name=f"p{i}/claude-sonnet-4-6",
            provider=AnthropicProvider(name=f"p{i}"),
            weight=float(i + 1),
            max_concurrency=1000,
        )
        for i in range(width)
    )
    policy = RoutePolicy(strategy=strategy, retries=1)
    routes = [
        Route(model=f"claude-model-{n}", deployments=deployments[:1], aliases=(f"alias-{n}",))
        for n in range(40)
    ]
    routes.append(
        Route(
            model="claude-sonnet-4-6",
            deployments=deployments,
            aliases=("sonnet",),
            policy=policy,
        )
    )
    routes.append(Route(model="claude-*", deployments=deployments, policy=policy))
    return RouteTable(routes)


def decide(routes: RouteTable, board: HealthBoard, rng: random.Random, model: str) -> None:
    route = routes.resolve(model)
    assert route is not None
    candidates, resting = order_candidates(route, board, rng)
    plan = AttemptPlan(
        policy=route.policy,
        board=board,
        backoff=Backoff(),
        rng=rng,
        deployments=route.deployments,
        resting=resting,
    )
    first = candidates[0]
    plan.before(first)
    plan.acquire(first)
    plan.succeeded(first, 0.05)
    plan.release(first)


def measure(strategy: str, width: int, model: str) -> float:
    """Median microseconds per decision."""
    routes, board, rng = table(strategy, width), HealthBoard(), random.Random(1)
    for _ in range(BATCH):
        decide(routes, board, rng, model)
    samples = []
    for _ in range(BATCHES):
        start = time.perf_counter_ns()
        for _ in range(BATCH):
            decide(routes, board, rng, model)
        samples.append((time.perf_counter_ns() - start) / BATCH / 1000)
    return statistics.median(samples)


def main() -> int:
    print(f"{'strategy':<15}{'deployments':>12}{'lookup':>10}{'µs/request':>12}")
    worst = 0.0
    for strategy in ("weighted", "least_inflight", "latency"):
        for width in (1, 3, 8):
            for lookup, model in (
                ("exact", "claude-sonnet-4-6"),
                ("alias", "sonnet"),
                ("pattern", "claude-opus-4-6"),
            ):
                us = measure(strategy, width, model)
                worst = max(worst, us)
                print(f"{strategy:<15}{width:>12}{lookup:>10}{us:>12.2f}")
    verdict = "within" if worst <= BUDGET_US else "OVER"
    print(f"worst median {worst:.2f} µs: {verdict} the {BUDGET_US:.0f} µs budget")
    return 0 if worst <= BUDGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
