"""Routing's pure parts: strategies, the health board, backoff, candidate order, config."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from llmgw.config import parse_config
from llmgw.errors import ConfigError
from llmgw.providers import AnthropicProvider
from llmgw.routes import Deployment, Route, RoutePolicy
from llmgw.routing.health import HealthBoard, Slot
from llmgw.routing.plan import AttemptPlan, order_candidates
from llmgw.routing.retry import Backoff, parse_retry_after
from llmgw.routing.strategies import latency, least_inflight, weighted


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dep(name: str, weight: float = 1.0, cap: int | None = None) -> Deployment:
    return Deployment(
        name=name, provider=AnthropicProvider(name=name), weight=weight, max_concurrency=cap
    )


A, B, C = dep("a", 1), dep("b", 2), dep("c", 7)


def test_weighted_first_pick_follows_weights_within_tolerance() -> None:
    rng, board, n = random.Random(7), HealthBoard(), 20_000
    firsts = Counter(weighted([A, B, C], board, rng)[0].name for _ in range(n))
    for d in (A, B, C):
        p = d.weight / 10
        sigma = (n * p * (1 - p)) ** 0.5
        assert abs(firsts[d.name] - n * p) < 4 * sigma, firsts


def test_weighted_order_is_a_permutation_and_zero_weight_is_fallback_only() -> None:
    rng, board = random.Random(1), HealthBoard()
    spare = dep("spare", 0)
    for _ in range(200):
        order = weighted([spare, A, B], board, rng)
        assert sorted(d.name for d in order) == ["a", "b", "spare"]
        assert order[-1] is spare


def test_least_inflight_prefers_fewest_streams_per_weight() -> None:
    board = HealthBoard()
    board.get("a").in_flight = 2
    board.get("b").in_flight = 2  # weight 2: one per unit
    board.get("c").in_flight = 0
    assert [d.name for d in least_inflight([A, B, C], board, random.Random(0))] == ["c", "b", "a"]


def test_latency_tries_unmeasured_first_then_lowest_ewma() -> None:
    board = HealthBoard(ewma_alpha=0.5)
    board.success("a", 0.4)
    board.success("b", 0.1)
    board.success("b", 0.3)  # ewma 0.2
    assert [d.name for d in latency([A, B, C], board, random.Random(0))] == ["c", "b", "a"]
    assert board.get("b").ttfb_ewma == pytest.approx(0.2)


def test_breaker_trips_after_threshold_then_admits_exactly_one_probe() -> None:
    clock = Clock()
    board = HealthBoard(failure_threshold=3, clock=clock)
    for _ in range(2):
        board.failure("a", cooldown=5)
    assert board.available("a", clock.now)
    board.failure("a", cooldown=5)
    assert not board.available("a", clock.now)
    assert board.get("a").trips == 1
    clock.now += 5
    assert board.available("a", clock.now)
    assert board.acquire(A) is Slot.PROBE
    assert board.acquire(A) is Slot.REFUSED  # the probe is out
    assert not board.available("a", clock.now)
    board.success("a", 0.1)
    board.release(A, Slot.PROBE)
    assert board.available("a", clock.now)
    assert board.acquire(A) is Slot.TAKEN


def test_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    board = HealthBoard(failure_threshold=1, clock=clock)
    board.failure("a", cooldown=5)
    clock.now += 5
    assert board.acquire(A) is Slot.PROBE
    board.failure("a", cooldown=5)
    board.release(A, Slot.PROBE)
    assert board.cooling("a", clock.now)
    assert board.get("a").trips == 1


def test_cap_refuses_even_when_forced() -> None:
    board = HealthBoard()
    capped = dep("x", cap=1)
    assert board.acquire(capped) is Slot.TAKEN
    assert board.acquire(capped, force=True) is Slot.REFUSED
    board.release(capped, Slot.TAKEN)
    assert board.acquire(capped) is Slot.TAKEN


def test_retry_after_rests_the_deployment_without_tripping() -> None:
    clock = Clock()
    board = HealthBoard(failure_threshold=3, clock=clock)
    board.failure("a", cooldown=30, retry_after=2)
    assert not board.available("a", clock.now)
    assert not board.cooling("a", clock.now)
    clock.now += 2
    assert board.available("a", clock.now)


def test_backoff_is_jittered_exponential_capped_and_honours_retry_after() -> None:
    backoff, rng = Backoff(base=0.1, cap=1.0, max_retry_after=5), random.Random(3)
    for retry, bound in ((0, 0.1), (1, 0.2), (3, 0.8), (10, 1.0)):
        delays = [backoff.delay(retry, None, rng) for _ in range(200)]
        assert all(d is not None and 0 <= d <= bound for d in delays)
        assert max(d for d in delays if d is not None) > bound * 0.8
    assert backoff.delay(0, 3.0, rng) == 3.0
    assert backoff.delay(0, 6.0, rng) is None


def test_parse_retry_after_reads_ms_seconds_and_http_dates() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "17"}) == 17.0
    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    assert parse_retry_after({"retry-after": date}, now=1792567670.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_candidates_put_resting_deployments_last_and_repeat_for_retries() -> None:
    clock = Clock()
    board = HealthBoard(failure_threshold=1, clock=clock)
    board.failure("a", cooldown=10)
    route = Route(model="m", deployments=(A, B), policy=RoutePolicy(retries=2))
    order, resting = order_candidates(route, board, random.Random(0))
    assert [d.name for d in order] == ["b", "a"] * 3
    assert resting == frozenset({"a"})


def ab_plan(board: HealthBoard, *, retries: int, cooldown: float, backoff: float) -> AttemptPlan:
    """A plan over deployments a and b with a fixed backoff and seed."""
    return AttemptPlan(
        policy=RoutePolicy(retries=retries, cooldown=cooldown),
        board=board,
        backoff=Backoff(base=backoff, cap=backoff),
        rng=random.Random(0),
        deployments=(A, B),
    )


def test_plan_skips_retries_beyond_budget_and_of_cooling_deployments() -> None:
    clock = Clock()
    board = HealthBoard(failure_threshold=1, clock=clock)
    plan = ab_plan(board, retries=1, cooldown=10, backoff=0.01)
    assert plan.before(A) == 0.0 and plan.acquire(A)
    plan.failed(A)
    plan.release(A)
    assert plan.before(A) is None  # cooling while b is fine
    assert plan.before(B) == 0.0 and plan.acquire(B)
    plan.release(B)
    delay = plan.before(B)
    assert delay is not None and 0 <= delay <= 0.01
    assert plan.acquire(B)
    plan.release(B)
    assert plan.retries == 1
    assert plan.before(B) is None  # budget spent
    assert board.get("b").in_flight == 0


def test_plan_spends_retries_on_the_least_failed_deployment_when_all_are_cooling() -> None:
    clock = Clock()
    board = HealthBoard(failure_threshold=1, clock=clock)
    for _ in range(5):
        board.failure("b", cooldown=60)  # plainly dead
    board.failure("a", cooldown=60)  # failed once, like its neighbours of a flaky upstream
    plan = ab_plan(board, retries=4, cooldown=60, backoff=0.001)
    for d in (A, B):  # first tries are free, whatever the breaker says
        assert plan.before(d) == 0.0 and plan.acquire(d)
        plan.failed(d)
        plan.release(d)
    assert board.get("a").failures == 2 and board.get("b").failures == 6
    assert plan.before(B) is None
    assert plan.before(A) is not None and plan.acquire(A)
    plan.release(A)
    for _ in range(5):
        board.failure("a", cooldown=60)  # now a is the worse one
    assert plan.before(A) is None
    assert plan.before(B) is not None


def test_routing_config_rejects_unknown_strategy_and_bad_timeouts() -> None:
    providers = {"a": {"kind": "anthropic", "base_url": "http://127.0.0.1:1"}}
    route = {"model": "m", "deployments": [{"provider": "a"}]}
    with pytest.raises(ConfigError, match=r"routing\.strategy: unknown strategy 'fastest'"):
        parse_config({"providers": providers, "routing": {"strategy": "fastest"}})
    with pytest.raises(ConfigError, match=r"routes\[0\]\.timeouts\.idle: must be positive"):
        parse_config({"providers": providers, "routes": [route | {"timeouts": {"idle": 0}}]})
    with pytest.raises(ConfigError, match=r"routes\[0\]\.timeouts\.total: unknown key"):
        parse_config({"providers": providers, "routes": [route | {"timeouts": {"total": 1}}]})
    cfg = parse_config(
        {
            "providers": providers,
            "routing": {"retries": 2, "cooldown": 9},
            "routes": [route | {"strategy": "latency", "timeouts": {"first_byte": 3}}],
        }
    )
    assert cfg.routing.retries == 2 and cfg.routes[0].strategy == "latency"
    assert cfg.routes[0].timeouts.first_byte == 3.0 and cfg.routes[0].retries is None
