"""What each feature costs the gateway, measured interleaved: every variant's proxy runs
side by side (all pinned to one core, idle but for their turn) and they take turns, round
after round, so a drift of the machine hits them all alike.

On a VM whose speed wanders by 30 % between minutes, this is what resolves the few-percent
differences `relay.py` (one variant after another) cannot. It reports the gateway's CPU time
per short request (from `/proc/PID/stat`, over each turn) and requests per second (each
turn's count over its wall time), each with its ratio to the first variant, the median of
the per-round ratios; with `--concurrency 1`, also time to first byte p50.

    python benchmarks/interleaved.py
    python benchmarks/interleaved.py --variants llmgw,llmgw+limits-memory,llmgw+limits-redis -c 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from _cases import Endpoint, fetch, warm_up
from _procs import Child, cpu_seconds, proxy_argv, start_child, start_upstream, stop_child
from _servers import loop_name
from _variants import proxies

DEFAULT = "llmgw,llmgw+metering,llmgw+audit-batched,llmgw+limits-memory,llmgw+limits-redis,naive"


async def _turn(target: Endpoint, requests: int, concurrency: int) -> tuple[float, float, float]:
    """``requests`` short streams at ``concurrency``: (CPU µs per request, TTFB p50 ms,
    requests per second)."""
    assert target.pid is not None
    remaining = requests
    firsts: list[float] = []

    async def work() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            firsts.append((await fetch(target, "short"))[0])

    before = cpu_seconds(target.pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(work() for _ in range(concurrency)))
    rps = requests / (time.perf_counter() - t0)
    cpu = (cpu_seconds(target.pid) - before) / requests * 1e6
    return cpu, statistics.median(firsts) * 1e3, rps


async def run(args: argparse.Namespace) -> None:
    variants = proxies(args.variants)
    names = [v.name for v in variants]
    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2 and not args.no_pin
    proxy_cpu, driver_cpu = (cpus[0], cpus[1]) if pin else (None, None)
    if driver_cpu is not None:
        os.sched_setaffinity(0, {driver_cpu})
    prefix = f"llmgw-bench:{os.getpid()}:{secrets.token_hex(4)}:"
    children: list[Child] = []
    turns: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="llmgw-bench-") as tmp:
        try:
            upstream = await start_upstream(cpu=driver_cpu, logdir=Path(tmp), children=children)
            connector = aiohttp.TCPConnector(limit=2000, limit_per_host=0)
            async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as s:
                targets = []
                for variant in variants:
                    name = variant.name
                    workdir = Path(tmp) / name.replace("+", "_")
                    workdir.mkdir()
                    argv = proxy_argv(
                        variant,
                        workdir,
                        upstream=upstream.url,
                        redis=args.redis,
                        prefix=prefix,
                    )
                    proxy = await start_child(
                        name,
                        argv,
                        cpu=proxy_cpu,
                        logdir=Path(tmp),
                        children=children,
                        env=variant.env,
                    )
                    target = Endpoint(
                        session=s, base=proxy.url, variant=variant, pid=proxy.proc.pid
                    )
                    await warm_up(target, "short", 300, args.concurrency)
                    targets.append(target)
                for rnd in range(args.rounds):
                    print(f"round {rnd + 1}/{args.rounds}", file=sys.stderr)
                    for target in targets:
                        turns[target.variant.name].append(
                            await _turn(target, args.requests, args.concurrency)
                        )
        finally:
            for child in list(children):
                await stop_child(child, children)
            if any("$redis" in text for v in variants for text in v.config.values()):
                from relay import _redis_rtt

                with contextlib.suppress(OSError, ConnectionError):
                    await _redis_rtt(args.redis, prefix, cleanup=True)
    _report(names, turns, args)


def _report(
    names: Sequence[str],
    turns: dict[str, list[tuple[float, float, float]]],
    args: argparse.Namespace,
) -> None:
    first = names[0]
    print(
        f"interleaved: {args.rounds} rounds x {args.requests} short requests at concurrency "
        f"{args.concurrency}; {loop_name()}; medians; ratios are per round, then the median"
    )
    ratio = f"{'x ' + first:>14s}"
    head = f"{'variant':24s} {'CPU/request':>12s} {ratio} {'req/s':>8s} {ratio}"
    if args.concurrency == 1:
        head += f" {'TTFB p50':>10s} {'vs ' + first:>12s}"
    print(head)

    def column(name: str, i: int) -> list[float]:
        return [turn[i] for turn in turns[name]]

    for name in names:
        cpu, ttfb, rps = (column(name, i) for i in range(3))
        cpu_x = statistics.median(a / b for a, b in zip(cpu, column(first, 0), strict=True))
        rps_x = statistics.median(a / b for a, b in zip(rps, column(first, 2), strict=True))
        line = (
            f"{name:24s} {statistics.median(cpu):9.1f} us {cpu_x:13.2f}x"
            f" {statistics.median(rps):8,.0f} {rps_x:13.2f}x"
        )
        if args.concurrency == 1:
            added = statistics.median(a - b for a, b in zip(ttfb, column(first, 1), strict=True))
            line += f" {statistics.median(ttfb):7.3f} ms {added:+9.3f} ms"
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--variants", default=DEFAULT, help=f"comma-separated; default {DEFAULT}")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=1500, help="per variant per round")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = parser.parse_args(argv)
    loop_name()  # uvloop for the driver too, when installed
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
