"""Instructions per request, counted by valgrind's callgrind: naive proxy vs llmgw.

Wall-clock CPU time on a shared VM wanders by 30 % between minutes and by 2-3x between
days, so a change of a few microseconds per request drowns in it. An instruction count
does not: for the same code, inputs and interpreter it is the same run after run, whatever
else the machine does. Each proxy runs under ``valgrind --tool=callgrind`` with
instrumentation off while it starts and warms up; it is switched on (``callgrind_control``)
for exactly ``--requests`` streams (short ones by default), then the count is dumped and divided.

Under valgrind a proxy runs ~50x slower, so reads coalesce more than at full speed: the
counts compare code paths, they are not a prediction of req/s. Compare variants of one run.
``--case paced`` counts streams of 50 events 20 ms apart, each its own read: the per-chunk
path (read, tap, write) rather than the per-request one.

    python benchmarks/instructions.py
    python benchmarks/instructions.py --case paced -c 8 --requests 48
    python benchmarks/instructions.py --variants naive,llmgw,llmgw+all -c 4 --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp
from _cases import Endpoint, fetch, warm_up
from _procs import (
    BenchError,
    Child,
    proxy_argv,
    slug,
    start_child,
    start_upstream,
    stop_child,
)
from _variants import proxies

_TOTALS = re.compile(rb"^(?:totals|summary):\s+(\d+)", re.MULTILINE)


async def _control(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "callgrind_control",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode:
        raise BenchError(f"callgrind_control {' '.join(args)}: {err.decode().strip()}")


async def _count(target: Endpoint, child: Child, out: Path, args: argparse.Namespace) -> float:
    """Instructions per request over ``args.requests`` streams of ``args.case`` at
    ``args.concurrency`` (the warm-up is short streams either way)."""
    pid = str(child.proc.pid)
    await warm_up(target, "short", args.warmup, args.concurrency)
    await _control("--instr=on", pid)
    remaining = args.requests

    async def work() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await fetch(target, args.case)

    await asyncio.gather(*(work() for _ in range(args.concurrency)))
    await _control("--instr=off", pid)
    await _control("--dump", pid)
    total = 0
    for dump in out.parent.glob(out.name + "*"):
        total += sum(int(m) for m in _TOTALS.findall(dump.read_bytes()))
    if not total:
        raise BenchError(f"no callgrind totals in {out}*")
    return total / int(args.requests)


async def run(args: argparse.Namespace) -> dict[str, float]:
    counts: dict[str, float] = {}
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="llmgw-instr-") as tmp:
        logdir = Path(tmp)
        try:
            upstream = await start_upstream(cpu=None, logdir=logdir, children=children)
            connector = aiohttp.TCPConnector(limit=100, limit_per_host=0)
            async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as s:
                for variant in proxies(args.variants):
                    name = variant.name
                    workdir = logdir / name.replace("+", "_")
                    workdir.mkdir()
                    out = (args.keep or workdir) / f"callgrind.{slug(name)}.out"
                    for stale in out.parent.glob(out.name + "*"):
                        stale.unlink()
                    argv = proxy_argv(
                        variant, workdir, upstream=upstream.url, redis=args.redis, prefix=""
                    )
                    valgrind = [
                        "valgrind",
                        "--tool=callgrind",
                        "--instr-atstart=no",
                        f"--log-file={workdir / 'valgrind.log'}",
                        f"--callgrind-out-file={out}",
                    ]
                    proxy = await start_child(
                        name,
                        valgrind + argv,
                        cpu=None,
                        logdir=logdir,
                        children=children,
                        env=variant.env,
                        ready_timeout=300,
                    )
                    target = Endpoint(
                        session=s, base=proxy.url, variant=variant, pid=proxy.proc.pid
                    )
                    counts[name] = await _count(target, proxy, out, args)
                    await stop_child(proxy, children)
                    print(f"{name}: {counts[name]:,.0f} instructions/request", file=sys.stderr)
        finally:
            for child in list(children):
                await stop_child(child, children)
    return counts


def _report(counts: dict[str, float], args: argparse.Namespace) -> None:
    first = next(iter(counts))
    print(
        f"callgrind: {args.requests} {args.case} requests at concurrency {args.concurrency} "
        f"(after {args.warmup} uncounted); instructions per request, all threads"
    )
    print(f"{'variant':24s} {'instructions':>14s} {'x ' + first:>12s}")
    for name, count in counts.items():
        print(f"{name:24s} {count:14,.0f} {count / counts[first]:11.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--variants", default="naive,llmgw", help="comma-separated; first is 1.0x")
    parser.add_argument("--case", choices=("short", "paced"), default="short")
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--keep", type=Path, help="write the callgrind dumps here (for callgrind_annotate)"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind (Debian: apt-get install valgrind)")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    _report(asyncio.run(run(args)), args)


if __name__ == "__main__":
    main()
