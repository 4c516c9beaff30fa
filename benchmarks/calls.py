"""Python calls per request, counted in the proxy process: naive proxy vs llmgw, by phase.

Where ``instructions.py`` says how much a request costs, this says what it is spent on, and
as exactly: a profile hook (``sys.setprofile``) in each proxy counts every Python and C
function call of ``--requests`` short streams sent one at a time, split into the calls from
the client's request arriving to the upstream request going out, and the rest (the answer,
the end of the stream, what runs after it). Counts, not times: the hook slows the proxy
~5x, but a call made is a call made. It prints the totals per phase and, per function, the
counts that differ most from the first variant's.

    python benchmarks/calls.py
    python benchmarks/calls.py --variants naive-bedrock,bedrock-passthrough --top 40
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import runpy
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
from _cases import Endpoint, fetch, warm_up
from _procs import BenchError, Child, proxy_argv, start_child, start_upstream, stop_child
from _variants import proxies

#: Phases of one request: until the upstream request is written, then everything else.
UPSTREAM, REST = "to upstream", "rest"
_SITE = "site-packages" + os.sep
#: aiohttp's StreamWriter methods that write an HTTP head (with or without a body).
_HEAD_WRITES = frozenset(("_send_headers_with_payload", "send_headers"))


def _where(path: str) -> str:
    for marker in (_SITE, str(Path(__file__).resolve().parents[1]) + os.sep):
        path = path.rpartition(marker)[2] or path
    return path


def _wrap(out: Path, argv: list[str]) -> None:
    """Run ``argv`` (a script or ``-m module``) with the counting hook switched on by
    SIGUSR1 and off by SIGUSR2, which writes the counts to ``out``."""
    counts = {UPSTREAM: collections.Counter[str](), REST: collections.Counter[str]()}
    phase = [REST]

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            name = code.co_name
            if name == "data_received" and code.co_filename.endswith("web_protocol.py"):
                phase[0] = UPSTREAM  # a request arrives (one at a time: see --requests)
            elif name in _HEAD_WRITES and code.co_filename.endswith("http_writer.py"):
                phase[0] = REST  # the first HTTP head written: the upstream request's
            counts[phase[0]][f"{_where(code.co_filename)}:{name}"] += 1
        elif event == "c_call":
            counts[phase[0]]["C " + getattr(arg, "__qualname__", repr(arg))] += 1

    def stop(*_: object) -> None:
        sys.setprofile(None)
        out.write_text(json.dumps(counts))

    signal.signal(signal.SIGUSR1, lambda *_: sys.setprofile(hook))
    signal.signal(signal.SIGUSR2, stop)
    if argv[0] == "-m":
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")


def _written(out: Path, name: str) -> dict[str, dict[str, int]]:
    """The counts the proxy writes on SIGUSR2 (in one call, so a whole file once it parses)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            counts: dict[str, dict[str, int]] = json.loads(out.read_text())
            return counts
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise BenchError(f"{name}: no counts written") from None
            time.sleep(0.05)


async def _count(target: Endpoint, child: Child, out: Path, requests: int) -> dict[str, Any]:
    await warm_up(target, "short", 200, 1)
    os.kill(child.proc.pid, signal.SIGUSR1)
    await asyncio.sleep(0.2)  # (the hook is set between two bytecodes of the idle loop)
    for _ in range(requests):
        await fetch(target, "short")
    os.kill(child.proc.pid, signal.SIGUSR2)
    counts = await asyncio.to_thread(_written, out, child.name)
    return {phase: {k: v / requests for k, v in c.items()} for phase, c in counts.items()}


async def run(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    results = {}
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="llmgw-calls-") as tmp:
        logdir = Path(tmp)
        try:
            upstream = await start_upstream(cpu=None, logdir=logdir, children=children)
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                for variant in proxies(args.variants):
                    name = variant.name
                    workdir = logdir / name.replace("+", "_")
                    workdir.mkdir()
                    argv = proxy_argv(
                        variant, workdir, upstream=upstream.url, redis=args.redis, prefix=""
                    )
                    out = workdir / "calls.json"
                    wrapped = [sys.executable, __file__, "--wrap", str(out), "--", *argv[1:]]
                    env = variant.env
                    proxy = await start_child(
                        name, wrapped, cpu=None, logdir=logdir, children=children, env=env
                    )
                    target = Endpoint(session=session, base=proxy.url, variant=variant, pid=None)
                    results[name] = await _count(target, proxy, out, args.requests)
                    await stop_child(proxy, children)
        finally:
            for child in list(children):
                await stop_child(child, children)
    return results


def _report(results: dict[str, dict[str, dict[str, float]]], top: int) -> None:
    first = next(iter(results))
    print("Python calls per short request (function and C calls), one request at a time")
    print(f"{'variant':24s} {UPSTREAM:>12s} {REST:>10s} {'total':>10s}")
    for name, phases in results.items():
        up, rest = (sum(phases.get(p, {}).values()) for p in (UPSTREAM, REST))
        print(f"{name:24s} {up:12.1f} {rest:10.1f} {up + rest:10.1f}")
    base = results[first]
    for name, phases in list(results.items())[1:]:
        print(f"\n{name} against {first}, the largest differences per request:")
        for phase in (UPSTREAM, REST):
            ours, theirs = phases.get(phase, {}), base.get(phase, {})
            diffs = sorted(
                ((ours.get(k, 0.0) - theirs.get(k, 0.0), k) for k in ours.keys() | theirs.keys()),
                key=lambda d: (-abs(d[0]), d[1]),
            )
            print(f"  {phase}:")
            for diff, key in diffs[:top]:
                if abs(diff) >= 0.5:
                    print(f"    {diff:+6.1f}  {key}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--wrap"]:  # inside a proxy process: --wrap OUT -- ARGV...
        _wrap(Path(argv[1]), argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--variants", default="naive,llmgw", help="comma-separated; first is 1.0x")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--top", type=int, default=20, help="differences listed per phase")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    try:
        _report(asyncio.run(run(args)), args.top)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
