"""What llmgw's relay costs: direct vs a naive aiohttp proxy vs llmgw, in one run.

    python benchmarks/relay.py                       # the full run, a few minutes
    python benchmarks/relay.py --quick               # a < 60 s smoke run
    python benchmarks/relay.py --cases short,paced --variants llmgw

A fake upstream (pre-built SSE bytes, `_servers.py`) runs in its own process next to this
load driver; each proxy runs in its own process, started fresh for every case so its memory
and CPU counters start clean. With two or more CPUs the proxy is pinned to the first and the
upstream and driver to the second. `direct` (driver → upstream) is always measured: added
latencies are relative to it. `naive` is the in-run reference every llmgw variant is judged
against. To add a variant, append a `Variant` to `VARIANTS` (see README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import string
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
from _report import Sample, metrics_for, percentile, render, summarize
from _servers import PAYLOADS, ROOT, T0_HEADER, Payload, loop_name

__all__ = ("FULL", "QUICK", "VARIANTS", "Plan", "Variant", "main")

SERVERS = Path(__file__).resolve().parent / "_servers.py"
DIRECT, NAIVE = "direct", "naive"

#: llmgw in front of the fake upstream (`$upstream`: its URL). A variant appends the TOML
#: tables of the features it turns on (a table may appear only once in a file).
BASE_CONFIG = """\
[storage]
url = "sqlite://:memory:"

[providers.upstream]
kind = "anthropic"
base_url = "$upstream"
"""
#: Features on by default, off for the bare `llmgw` row (relay + usage tap only).
BARE = """
[metering]
enabled = false
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    """One row group of the table: how the driver reaches the upstream."""

    name: str
    #: `direct` (no proxy), `naive` (the reference proxy) or `llmgw`.
    kind: str
    #: llmgw: TOML config (`string.Template`, `$upstream` = the fake upstream's URL).
    config: str = BASE_CONFIG
    #: llmgw: `module:function(GatewayConfig) -> web.Application` for variants that need
    #: middlewares; run by `_servers.py gateway`. `None`: `python -m llmgw serve` as shipped.
    app_factory: str | None = None
    #: Extra request headers (an API key for an authenticating variant).
    headers: Mapping[str, str] = field(default_factory=dict)
    path: str = "/v1/messages"


VARIANTS: tuple[Variant, ...] = (
    Variant(name=DIRECT, kind="direct"),
    Variant(name=NAIVE, kind="naive"),
    Variant(name="llmgw", kind="llmgw", config=BASE_CONFIG + BARE),
    Variant(name="llmgw + metering", kind="llmgw", config=BASE_CONFIG),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    repeats: int
    short_seconds: float
    concurrencies: tuple[int, ...]
    large_single_runs: int
    large_parallel_runs: int
    paced_streams: int
    warmup_requests: int


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
CASES = ("short", "large", "paced")

REQUEST_BODY = json.dumps(
    {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "stream": True,
        "messages": [{"role": "user", "content": "Say hello."}],
    }
).encode()
REQUEST_HEADERS = {
    "content-type": "application/json",
    "anthropic-version": "2023-06-01",
    "x-api-key": "sk-bench",
}
_READY = re.compile(rb"listening on (http://\S+)")
_TICK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


# -- processes -------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Child:
    name: str
    proc: asyncio.subprocess.Process
    url: str
    ready_line: str
    log: Path


async def start_child(
    name: str, argv: Sequence[str], *, cpu: int | None, logdir: Path, children: list[Child]
) -> Child:
    log = logdir / f"{name}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, (str(ROOT), str(SERVERS.parent), env.get("PYTHONPATH")))
    )
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=err, cwd=ROOT, env=env
        )
    child = Child(name=name, proc=proc, url="", ready_line="", log=log)
    children.append(child)
    if cpu is not None:
        # Before the child starts any thread: its threads inherit the mask.
        os.sched_setaffinity(proc.pid, {cpu})
    try:
        async with asyncio.timeout(30):
            child.url, child.ready_line = await _ready(child)
    except TimeoutError:
        raise BenchError(f"{name} did not start within 30 s:\n{_tail(log)}") from None
    return child


async def _ready(child: Child) -> tuple[str, str]:
    """The URL from the child's `listening on http://...` line, and the line."""
    assert child.proc.stdout is not None
    while True:
        line = await child.proc.stdout.readline()
        if not line:
            raise BenchError(f"{child.name} exited before listening:\n{_tail(child.log)}")
        match = _READY.search(line)
        if match is not None:
            return match.group(1).decode(), line.decode().strip()


async def stop_child(child: Child, children: list[Child]) -> None:
    """SIGTERM by PID, SIGKILL after 10 s; reports anything the child wrote to stderr."""
    proc = child.proc
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if child in children:
        children.remove(child)
    tail = _tail(child.log)
    if tail:
        print(f"  note: {child.name} wrote to stderr:\n{tail}", file=sys.stderr)


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid` (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


# -- load ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where the driver sends one variant's requests."""

    session: aiohttp.ClientSession
    base: str
    variant: Variant
    pid: int | None  # the proxy process; None for direct

    def url(self, case: str) -> str:
        return f"{self.base}{self.variant.path}?case={case}"

    @property
    def headers(self) -> dict[str, str]:
        return {**REQUEST_HEADERS, **self.variant.headers}


async def fetch(target: Endpoint, payload: Payload) -> tuple[float, float]:
    """One streamed request; (time to first body byte, total). Checks every byte."""
    start = time.perf_counter()
    first = 0.0
    digest = hashlib.sha256()
    async with target.session.post(
        target.url(payload.name), data=REQUEST_BODY, headers=target.headers
    ) as resp:
        if resp.status != 200:
            body = await resp.content.read(500)
            raise BenchError(f"{target.variant.name}: HTTP {resp.status}: {body!r}")
        async for chunk in resp.content.iter_any():
            if not first:
                first = time.perf_counter()
            digest.update(chunk)
    end = time.perf_counter()
    if digest.digest() != payload.sha256:
        raise BenchError(f"{target.variant.name}/{payload.name}: bytes received != bytes sent")
    return first - start, end - start


async def _workers(n: int, work: Callable[[], Awaitable[None]]) -> None:
    await asyncio.gather(*(work() for _ in range(n)))


async def warm_up(target: Endpoint, requests: int, concurrency: int) -> None:
    """Code paths loaded and `concurrency` connections open (both hops), so a case measures
    the relay, not accept-queue overflow (aiohttp's default backlog is 128)."""
    remaining = max(requests, concurrency)

    async def work() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await fetch(target, PAYLOADS["short"])

    await _workers(concurrency, work)


async def short_case(target: Endpoint, plan: Plan) -> Sample:
    payload = PAYLOADS["short"]
    out: Sample = {}
    total = 0
    for c in plan.concurrencies:
        ttfbs: list[float] = []
        deadline = time.perf_counter() + plan.short_seconds

        async def work(ttfbs: list[float] = ttfbs, deadline: float = deadline) -> None:
            while time.perf_counter() < deadline:
                ttfbs.append((await fetch(target, payload))[0])

        start = time.perf_counter()
        await _workers(c, work)
        elapsed = time.perf_counter() - start
        out[f"short.c{c}.rps"] = len(ttfbs) / elapsed
        out[f"short.c{c}.ttfb_p50"] = percentile(ttfbs, 50) * 1e3
        out[f"short.c{c}.ttfb_p99"] = percentile(ttfbs, 99) * 1e3
        total += len(ttfbs)
    out["_requests"] = total
    return out


async def large_case(target: Endpoint, plan: Plan) -> Sample:
    payload = PAYLOADS["large"]
    singles = [(await fetch(target, payload))[1] for _ in range(plan.large_single_runs)]
    single = statistics.median(singles)
    rounds = []
    for _ in range(plan.large_parallel_runs):
        start = time.perf_counter()
        await asyncio.gather(*(fetch(target, payload) for _ in range(8)))
        rounds.append(time.perf_counter() - start)
    parallel = statistics.median(rounds)
    return {
        "large.x1.mbps": payload.size / single / 1e6,
        "large.x1.eps": payload.events / single,
        "large.x8.mbps": 8 * payload.size / parallel / 1e6,
        "large.x8.eps": 8 * payload.events / parallel,
        "_requests": plan.large_single_runs + 8 * plan.large_parallel_runs,
    }


async def _paced_stream(target: Endpoint, payload: Payload) -> tuple[float, list[float]]:
    """(time to first event, lateness of each event vs the upstream's schedule)."""
    sent = time.monotonic()
    first = 0.0
    late: list[float] = []
    digest = hashlib.sha256()
    async with target.session.post(
        target.url(payload.name), data=REQUEST_BODY, headers=target.headers
    ) as resp:
        if resp.status != 200:
            raise BenchError(f"{target.variant.name}: HTTP {resp.status}")
        t0 = float(resp.headers[T0_HEADER])
        newline_tail = False
        async for chunk in resp.content.iter_any():
            now = time.monotonic()
            digest.update(chunk)
            # Events end with a blank line; our payload never has three newlines in a row.
            ends = chunk.count(b"\n\n") + (newline_tail and chunk[:1] == b"\n")
            newline_tail = chunk[-1:] == b"\n"
            for _ in range(ends):
                if not late:
                    first = now - sent
                late.append(now - (t0 + len(late) * payload.interval))
    if digest.digest() != payload.sha256 or len(late) != payload.events:
        raise BenchError(f"{target.variant.name}/paced: bytes received != bytes sent")
    return first, late


async def paced_case(target: Endpoint, plan: Plan) -> Sample:
    payload = PAYLOADS["paced"]
    n = plan.paced_streams
    base_rss = rss_bytes(target.pid) if target.pid is not None else 0
    peak = 0
    done = asyncio.Event()

    async def sample_rss() -> None:
        nonlocal peak
        assert target.pid is not None
        while not done.is_set():
            peak = max(peak, rss_bytes(target.pid))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await done.wait()

    sampler = asyncio.ensure_future(sample_rss()) if target.pid is not None else None
    try:
        results = await asyncio.gather(*(_paced_stream(target, payload) for _ in range(n)))
    finally:
        done.set()
        if sampler is not None:
            await sampler
    late = [x for _, stream in results for x in stream]
    out: Sample = {
        "paced.late_p99": percentile(late, 99) * 1e3,
        "paced.ttfe_p99": percentile([first for first, _ in results], 99) * 1e3,
        "_requests": n,
    }
    if target.pid is not None:
        out["paced.rss_kb"] = (peak - base_rss) / n / 1024
    return out


CASE_RUNNERS: dict[str, Callable[[Endpoint, Plan], Awaitable[Sample]]] = {
    "short": short_case,
    "large": large_case,
    "paced": paced_case,
}


# -- the run ---------------------------------------------------------------------------------


def _proxy_argv(variant: Variant, upstream: str, tmp: Path) -> list[str]:
    if variant.kind == NAIVE:
        return [sys.executable, str(SERVERS), "naive", "--upstream", upstream]
    config = tmp / f"{_slug(variant.name)}.toml"
    config.write_text(string.Template(variant.config).substitute(upstream=upstream))
    if variant.app_factory is not None:
        factory = ["--factory", variant.app_factory]
        return [sys.executable, str(SERVERS), "gateway", "-c", str(config), *factory]
    # WARNING: at INFO, `llmgw serve` logs one access line per request.
    serve = ["serve", "-c", str(config), "--host", "127.0.0.1", "--port", "0"]
    return [sys.executable, "-m", "llmgw", "--log-level", "WARNING", *serve]


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


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name)


@contextlib.asynccontextmanager
async def _profiled(run: Run, label: str, pid: int | None) -> AsyncIterator[None]:
    """py-spy on the proxy for the duration of the block (collapsed stacks, `--profile`)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if run.profile is None or pid is None:
        yield
        return
    out = run.profile / f"{_slug(label)}.txt"
    argv = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "-o", str(out)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        if run.driver_cpu is not None:
            os.sched_setaffinity(proc.pid, {run.driver_cpu})
        await asyncio.sleep(0.5)  # attached before the load starts
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        print(f"  profile: {out}", file=sys.stderr)


async def measure(run: Run, variant: Variant, case: str) -> Sample:
    """One case against one variant, with a fresh proxy process."""
    proxy: Child | None = None
    try:
        if variant.kind == DIRECT:
            base, pid = run.upstream.url, None
        else:
            argv = _proxy_argv(variant, run.upstream.url, run.tmp)
            proxy = await start_child(
                variant.name, argv, cpu=run.proxy_cpu, logdir=run.tmp, children=run.children
            )
            # `llmgw serve` names no loop: it installs uvloop when importable, as we do.
            loop = proxy.ready_line.partition("(")[2].rstrip(")") or run.loops["driver"]
            run.loops.setdefault(variant.name, loop)
            base, pid = proxy.url, proxy.proc.pid
        target = Endpoint(session=run.session, base=base, variant=variant, pid=pid)
        # Short streams reuse connections at every concurrency; paced streams open theirs.
        width = max(run.plan.concurrencies) if case == "short" else 16
        await warm_up(target, run.plan.warmup_requests, width)
        async with _profiled(run, f"{variant.name}-{case}", pid):
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
    return f"  {case:<5} {variant:<18} {shown}"


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    plan = QUICK if args.quick else FULL
    if args.repeats:
        plan = Plan(**{**asdict(plan), "repeats": args.repeats})
    cases = [c for c in CASES if c in args.cases.split(",")]
    wanted = set(args.variants.split(",")) | {DIRECT} if args.variants else None
    variants = [v for v in VARIANTS if wanted is None or v.name in wanted]
    if wanted is not None and len(variants) != len(wanted):
        known = ", ".join(v.name for v in VARIANTS)
        raise SystemExit(f"unknown variant in {args.variants!r}; known: {known}")
    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2 and not args.no_pin
    proxy_cpu, driver_cpu = (cpus[0], cpus[1]) if pin else (None, None)
    if driver_cpu is not None:
        os.sched_setaffinity(0, {driver_cpu})
    loops = {"driver": args.loop}
    profile: Path | None = args.profile
    children: list[Child] = []
    samples: dict[str, list[Sample]] = {v.name: [] for v in variants}
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="llmgw-bench-") as tmpdir:
        tmp = Path(tmpdir)
        connector = aiohttp.TCPConnector(limit=2000, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=120, sock_read=30)
        try:
            upstream = await start_child(
                "upstream",
                [sys.executable, str(SERVERS), "upstream"],
                cpu=driver_cpu,
                logdir=tmp,
                children=children,
            )
            loops["upstream"] = upstream.ready_line.partition("(")[2].rstrip(")")
            async with aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=False
            ) as session:
                run = Run(
                    plan=plan,
                    session=session,
                    upstream=upstream,
                    tmp=tmp,
                    children=children,
                    proxy_cpu=proxy_cpu,
                    driver_cpu=driver_cpu,
                    profile=profile,
                    loops=loops,
                )
                for rep in range(plan.repeats):
                    print(f"repeat {rep + 1}/{plan.repeats}", file=sys.stderr)
                    per_rep: dict[str, Sample] = {v.name: {} for v in variants}
                    for case in cases:
                        for variant in variants:
                            sample = await measure(run, variant, case)
                            print(_progress(variant.name, case, sample), file=sys.stderr)
                            per_rep[variant.name].update(sample)
                    for name, sample in per_rep.items():
                        samples[name].append(sample)
        finally:
            for child in list(children):
                await stop_child(child, children)
    metrics = metrics_for(cases, plan.concurrencies)
    medians = summarize(samples, metrics, baseline=DIRECT)
    table, missed = render(
        medians,
        metrics,
        direct=DIRECT,
        naive=NAIVE,
        targeted=lambda name: any(v.name == name and v.kind == "llmgw" for v in variants),
    )
    pinning = f"proxy on CPU {proxy_cpu}, upstream + driver on CPU {driver_cpu}"
    print(
        f"llmgw relay benchmark: {'quick' if args.quick else 'full'} run, "
        f"{plan.repeats} repeat(s), {time.monotonic() - started:.0f} s; "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}\n"
        f"pinning: {pinning if proxy_cpu is not None else 'none'}; load average before "
        f"{load_before:.2f}, after {os.getloadavg()[0]:.2f} (other work on the machine skews "
        "every number)\n"
        f"event loops: {', '.join(f'{k}={v}' for k, v in loops.items())}\n"
        f"payloads: "
        + ", ".join(f"{p.name} {p.size:,} B/{p.events} events" for p in PAYLOADS.values())
        + f"\nmedians of {plan.repeats} repeat(s); added = variant - direct in the same repeat\n"
    )
    print(table)
    if missed:
        print("\ntargets missed:\n  " + "\n  ".join(missed))
    return medians


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a < 60 s smoke run")
    parser.add_argument("--cases", default=",".join(CASES), help="subset of short,large,paced")
    parser.add_argument(
        "--variants", help="comma-separated names (direct is always run); default: all"
    )
    parser.add_argument("--repeats", type=int, help="override the plan's repeats")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", help="also write the medians to this file")
    parser.add_argument(
        "--profile", metavar="DIR", help="py-spy each proxy during its cases (collapsed stacks)"
    )
    args = parser.parse_args(argv)
    args.loop = loop_name()
    if args.profile:
        args.profile = Path(args.profile).resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    medians = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(medians, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
