"""What llmgw costs a stream: direct vs a naive aiohttp proxy vs llmgw variants, in one run.

    python benchmarks/relay.py                       # the full run: every variant, ~20 min
    python benchmarks/relay.py --quick               # a smoke run (every variant works)
    python benchmarks/relay.py --cases short --variants llmgw+auth,llmgw+routing

A fake upstream (pre-built SSE and Bedrock event-stream bytes, `_servers.py`) runs in its own
process next to this load driver; each proxy runs in its own process, started fresh for every
case so its memory and CPU counters start clean. With two or more CPUs the proxy is pinned to
the first and the upstream and driver to the second. `direct` (driver → upstream) is always
measured: added latencies are relative to it. `naive` is the reference every llmgw relay is
judged against; feature variants (`llmgw+auth`...) are judged against the bare `llmgw` row.
The rows are in `_variants.py` (see README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import aiohttp
from _cases import CASE_RUNNERS, Endpoint, Plan, warm_up
from _procs import (
    BenchError,
    Child,
    cpu_seconds,
    profiled,
    proxy_argv,
    slug,
    start_child,
    start_upstream,
    stop_child,
)
from _report import Sample, metrics_for, render, summarize
from _servers import CASES, loop_name, payloads
from _variants import DIRECT, Variant, roles, select

__all__ = ("FULL", "QUICK", "main")

FULL = Plan(
    repeats=3,
    short_seconds=2.0,
    concurrencies=(1, 16, 64, 256),
    large_single_runs=8,
    large_parallel_runs=3,
    paced_streams=500,
    warmup_requests=300,
)
QUICK = Plan(
    repeats=1,
    short_seconds=0.5,
    concurrencies=(1, 16, 64, 256),
    large_single_runs=3,
    large_parallel_runs=1,
    paced_streams=500,
    warmup_requests=100,
)


@dataclass(slots=True, kw_only=True)
class Run:
    """What every measurement of one run shares."""

    plan: Plan
    session: aiohttp.ClientSession
    upstream: Child
    tmp: Path
    children: list[Child]
    proxy_cpu: int | None
    driver_cpu: int | None
    profile: Path | None
    loops: dict[str, str]
    redis: str
    prefix: str


def _proxy_argv(run: Run, variant: Variant, label: str) -> list[str]:
    workdir = run.tmp / label
    workdir.mkdir()
    return proxy_argv(
        variant, workdir, upstream=run.upstream.url, redis=run.redis, prefix=run.prefix
    )


async def measure(run: Run, variant: Variant, case: str, rep: int) -> Sample:
    """One case against one variant, with a fresh proxy process."""
    proxy: Child | None = None
    label = f"{slug(variant.name)}-{case}-{rep}"
    try:
        if variant.kind == DIRECT:
            base, pid = run.upstream.url, None
        else:
            argv = _proxy_argv(run, variant, label)
            proxy = await start_child(
                variant.name,
                argv,
                cpu=run.proxy_cpu,
                logdir=run.tmp,
                children=run.children,
                env=variant.env,
            )
            # `llmgw serve` names no loop: it installs uvloop when importable, as we do.
            loop = proxy.ready_line.partition("(")[2].rstrip(")") or run.loops["driver"]
            run.loops.setdefault(variant.kind, loop)
            base, pid = proxy.url, proxy.proc.pid
        target = Endpoint(session=run.session, base=base, variant=variant, pid=pid)
        # Short streams reuse connections at every concurrency; paced streams open theirs.
        width = max(run.plan.concurrencies) if case == "short" else 16
        await warm_up(target, case, run.plan.warmup_requests, width)
        out = run.profile / f"{label}.txt" if run.profile is not None else None
        async with profiled(out, pid, cpu=run.driver_cpu):
            cpu0 = cpu_seconds(pid) if pid is not None else 0.0
            async with asyncio.timeout(600):
                sample = await CASE_RUNNERS[case](target, run.plan)
            requests = sample.pop("_requests")
            if pid is not None:
                spent = cpu_seconds(pid) - cpu0
                sample[f"{case}.cpu"] = spent / requests * (1e6 if case == "short" else 1e3)
        return sample
    finally:
        if proxy is not None:
            await stop_child(proxy, run.children)


def _progress(variant: str, case: str, sample: Sample) -> str:
    shown = ", ".join(
        f"{k.partition('.')[2]}={v:,.1f}" for k, v in sample.items() if not k.endswith("p99")
    )
    return f"  {case:<5} {variant:<20} {shown}"


async def _redis_rtt(url: str, prefix: str, *, cleanup: bool = False) -> float:
    """Median PING round trip (ms) over the client llmgw's limiter uses; with `cleanup`,
    deletes this run's keys instead (and returns how many there were)."""
    from llmgw.limits._redis_client import RedisClient

    client = RedisClient(url, timeout=5.0)
    try:
        if cleanup:
            deleted, cursor = 0, b"0"
            while True:
                reply = await client.call("SCAN", cursor, "MATCH", prefix + "*", "COUNT", 1000)
                assert isinstance(reply, list) and isinstance(reply[0], bytes)
                assert isinstance(reply[1], list)
                cursor, keys = reply[0], [k for k in reply[1] if isinstance(k, bytes)]
                if keys:
                    deleted += len(keys)
                    await client.call("DEL", *keys)
                if cursor == b"0":
                    return float(deleted)
        times = []
        for _ in range(200):
            start = time.perf_counter()
            await client.call("PING")
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3
    finally:
        await client.close()


def _header(args: argparse.Namespace, plan: Plan, run: Run, started: float, load: float) -> str:
    pinning = f"proxy on CPU {run.proxy_cpu}, upstream + driver on CPU {run.driver_cpu}"
    sizes = "; ".join(
        f"{flavor}: " + ", ".join(f"{p.name} {p.size:,} B" for p in answers.values())
        for flavor, answers in payloads().items()
    )
    events = ", ".join(f"{p.name} {p.events}" for p in payloads()["sse"].values())
    return (
        f"llmgw relay benchmark: {'quick' if args.quick else 'full'} run, "
        f"{plan.repeats} repeat(s), {time.monotonic() - started:.0f} s; "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}\n"
        f"pinning: {pinning if run.proxy_cpu is not None else 'none'}; load average before "
        f"{load:.2f}, after {os.getloadavg()[0]:.2f} (other work on the machine skews "
        "every number)\n"
        f"event loops: {', '.join(f'{k}={v}' for k, v in run.loops.items())}\n"
        f"payloads: {sizes}; events: {events}\n"
        f"medians of {plan.repeats} repeat(s); added = variant - direct in the same repeat; "
        "vs llmgw = variant - bare llmgw (added metrics) or variant / bare llmgw\n"
    )


async def run(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    plan = QUICK if args.quick else FULL
    if args.repeats:
        plan = replace(plan, repeats=args.repeats)
    cases = [c for c in CASES if c in args.cases.split(",")]
    variants = select(args.variants)
    measured: dict[str, float] = {}
    prefix = f"llmgw-bench:{os.getpid()}:{secrets.token_hex(4)}:"
    uses_redis = any("$redis" in text for v in variants for text in v.config.values())
    if uses_redis:
        try:
            measured["redis_rtt_ms"] = await _redis_rtt(args.redis, prefix)
        except (OSError, ConnectionError) as exc:
            raise SystemExit(f"{args.redis}: {exc} (needed by the Redis variants)") from None
    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2 and not args.no_pin
    proxy_cpu, driver_cpu = (cpus[0], cpus[1]) if pin else (None, None)
    if driver_cpu is not None:
        os.sched_setaffinity(0, {driver_cpu})
    children: list[Child] = []
    samples: dict[str, list[Sample]] = {v.name: [] for v in variants}
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = Path(tempfile.mkdtemp(prefix="llmgw-bench-"))
            print(f"keeping configs, logs and databases in {tmp}", file=sys.stderr)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmgw-bench-")))
        connector = aiohttp.TCPConnector(limit=2000, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=120, sock_read=30)
        try:
            upstream = await start_upstream(cpu=driver_cpu, logdir=tmp, children=children)
            async with aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=False
            ) as session:
                bench = Run(
                    plan=plan,
                    session=session,
                    upstream=upstream,
                    tmp=tmp,
                    children=children,
                    proxy_cpu=proxy_cpu,
                    driver_cpu=driver_cpu,
                    profile=args.profile,
                    loops={
                        "driver": args.loop,
                        "upstream": upstream.ready_line.partition("(")[2].rstrip(")"),
                    },
                    redis=args.redis,
                    prefix=prefix,
                )
                for rep in range(plan.repeats):
                    print(f"repeat {rep + 1}/{plan.repeats}", file=sys.stderr)
                    per_rep: dict[str, Sample] = {v.name: {} for v in variants}
                    for case in cases:
                        for variant in variants:
                            sample = await measure(bench, variant, case, rep)
                            print(_progress(variant.name, case, sample), file=sys.stderr)
                            per_rep[variant.name].update(sample)
                    for name, sample in per_rep.items():
                        samples[name].append(sample)
        finally:
            for child in list(children):
                await stop_child(child, children)
            if uses_redis:
                keys = await _redis_rtt(args.redis, prefix, cleanup=True)
                print(f"deleted {keys:.0f} Redis keys under {prefix}", file=sys.stderr)
    metrics = metrics_for(cases, plan.concurrencies)
    cells = summarize(samples, metrics, roles(variants))
    table, missed = render(
        cells,
        metrics,
        roles=roles(variants),
        goals={v.name: v.goals for v in variants},
        measured=measured,
    )
    print(_header(args, plan, bench, started, load_before))
    if "redis_rtt_ms" in measured:
        print(f"Redis PING round trip (median of 200): {measured['redis_rtt_ms']:.3f} ms\n")
    print(table)
    if missed:
        print("\ntargets missed:\n  " + "\n  ".join(missed))
    return {v: {k: asdict(c) for k, c in row.items()} for v, row in cells.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run, 1 repeat")
    parser.add_argument("--cases", default=",".join(CASES), help="subset of short,large,paced")
    parser.add_argument(
        "--variants",
        help="comma-separated names; the rows they are compared with run too; default: all",
    )
    parser.add_argument("--repeats", type=int, help="override the plan's repeats")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379/0", help="for llmgw+limits-redis"
    )
    parser.add_argument("--json", help="also write the medians to this file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the run's configs, logs and databases"
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="py-spy each proxy during its cases (raw stacks)"
    )
    args = parser.parse_args(argv)
    args.loop = loop_name()
    if args.profile:
        args.profile = Path(args.profile).resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    try:
        cells = asyncio.run(run(args))
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(cells, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
