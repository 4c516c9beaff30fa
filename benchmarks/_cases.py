"""The load `relay.py` drives through one proxy: the short, large and paced cases.

Every response is checked: byte for byte (SHA-256 against what the upstream wrote) for a
variant that relays as is; for a translating variant, the first response of each case is
decoded and compared event by event with what the upstream sent, and every later response
must then be byte-identical to that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from _procs import BenchError, rss_bytes
from _report import Sample, percentile
from _servers import T0_HEADER, Payload, payloads
from _variants import BENCH_KEY, Variant

from llmgw.wire.sse import SSEDecoder

__all__ = ("CASE_RUNNERS", "Endpoint", "Plan", "fetch", "warm_up")


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    repeats: int
    short_seconds: float
    concurrencies: tuple[int, ...]
    large_single_runs: int
    large_parallel_runs: int
    paced_streams: int
    warmup_requests: int


_MESSAGES = [{"role": "user", "content": "Say hello."}]
_HEADERS = {
    "anthropic": {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": BENCH_KEY,
    },
    # What boto3 and Claude Code send (their SigV4 headers are dropped by llmgw anyway).
    "bedrock": {
        "content-type": "application/json",
        "accept": "application/json",
        "x-amzn-bedrock-accept": "application/json",
        "authorization": f"Bearer {BENCH_KEY}",
    },
}


@functools.cache
def request_body(surface: str, model: str) -> bytes:
    if surface == "bedrock":  # the model is in the path; the endpoint says "stream"
        body: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31"}
    else:
        body = {"model": model, "stream": True}
    body |= {"max_tokens": 1024, "messages": _MESSAGES}
    return json.dumps(body).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where the driver sends one variant's requests, and what it expects back."""

    session: aiohttp.ClientSession
    base: str
    variant: Variant
    pid: int | None  # the proxy process; None for direct
    #: case → SHA-256 every response must have (learnt from the first, if translated).
    digests: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.variant.translated:
            for case, answer in self.payloads.items():
                self.digests[case] = answer.sha256

    @property
    def payloads(self) -> dict[str, Payload]:
        """What the upstream sends, by case (a translating variant's client gets another format)."""
        flavor = "bedrock" if self.variant.surface == "bedrock" else "sse"
        return payloads()[flavor]

    def url(self, case: str) -> str:
        return self.base + self.variant.path.format(case=case)

    def body(self, case: str) -> bytes:
        return request_body(self.variant.surface, self.variant.model.format(case=case))

    @property
    def headers(self) -> dict[str, str]:
        return {**_HEADERS[self.variant.surface], **self.variant.headers}

    def check(self, case: str, digest: bytes, data: bytearray | None) -> None:
        expected = self.digests.get(case)
        if expected is None and data is not None:
            self._check_events(case, bytes(data))
            expected = self.digests.setdefault(case, digest)
        if digest != expected:
            raise BenchError(f"{self.variant.name}/{case}: bytes received != bytes expected")

    def _check_events(self, case: str, data: bytes) -> None:
        """A translated stream carries the upstream's events, the model renamed back."""
        model = self.variant.model.format(case=case)
        want = []
        for name, raw in self.payloads[case].source:
            event = json.loads(raw)
            if name == "message_start":
                event["message"]["model"] = model
            want.append((name, event))
        got = [(ev.event, ev.json()) for ev in SSEDecoder().feed(data)]
        if got != want:
            first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), 0)
            raise BenchError(
                f"{self.variant.name}/{case}: translated stream differs from the upstream's "
                f"events ({len(got)} vs {len(want)} events; first difference at {first})"
            )


async def fetch(target: Endpoint, case: str) -> tuple[float, float]:
    """One streamed request; (time to first body byte, total). Checks every byte."""
    learn = case not in target.digests
    start = time.perf_counter()
    first = 0.0
    digest = hashlib.sha256()
    data = bytearray() if learn else None
    async with target.session.post(
        target.url(case), data=target.body(case), headers=target.headers
    ) as resp:
        if resp.status != 200:
            body = await resp.content.read(500)
            raise BenchError(f"{target.variant.name}: HTTP {resp.status}: {body!r}")
        async for chunk in resp.content.iter_any():
            if not first:
                first = time.perf_counter()
            digest.update(chunk)
            if data is not None:
                data += chunk
    end = time.perf_counter()
    target.check(case, digest.digest(), data)
    return first - start, end - start


async def _workers(n: int, work: Callable[[], Awaitable[None]]) -> None:
    await asyncio.gather(*(work() for _ in range(n)))


async def warm_up(target: Endpoint, case: str, requests: int, concurrency: int) -> None:
    """Code paths loaded and `concurrency` connections open (both hops), so a case measures
    the relay, not connection set-up; a translating variant has learnt its digests."""
    remaining = max(requests, concurrency)
    for name in dict.fromkeys(("short", case)):
        if name not in target.digests:
            await fetch(target, name)

    async def work() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await fetch(target, "short")

    await _workers(concurrency, work)


async def short_case(target: Endpoint, plan: Plan) -> Sample:
    out: Sample = {}
    total = 0
    for c in plan.concurrencies:
        ttfbs: list[float] = []
        deadline = time.perf_counter() + plan.short_seconds

        async def work(ttfbs: list[float] = ttfbs, deadline: float = deadline) -> None:
            while time.perf_counter() < deadline:
                ttfbs.append((await fetch(target, "short"))[0])

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
    # Sized by what the upstream writes: a translating variant's output is another format.
    source = target.payloads["large"]
    singles = [(await fetch(target, "large"))[1] for _ in range(plan.large_single_runs)]
    single = statistics.median(singles)
    rounds = []
    for _ in range(plan.large_parallel_runs):
        start = time.perf_counter()
        await asyncio.gather(*(fetch(target, "large") for _ in range(8)))
        rounds.append(time.perf_counter() - start)
    parallel = statistics.median(rounds)
    return {
        "large.x1.mbps": source.size / single / 1e6,
        "large.x1.eps": source.events / single,
        "large.x8.mbps": 8 * source.size / parallel / 1e6,
        "large.x8.eps": 8 * source.events / parallel,
        "_requests": plan.large_single_runs + 8 * plan.large_parallel_runs,
    }


class _EventCounter:
    """Complete events in a stream fed in arbitrary chunks: SSE blank lines, or event-stream
    frames (each starts with its total length, big-endian uint32)."""

    __slots__ = ("_buffered", "_frames", "_newline_tail")

    def __init__(self, *, frames: bool) -> None:
        self._frames = frames
        self._newline_tail = False
        self._buffered = b""

    def feed(self, chunk: bytes) -> int:
        if not self._frames:
            # Our events never hold three newlines in a row, so "\n\n" ends exactly one.
            ends = chunk.count(b"\n\n") + (self._newline_tail and chunk[:1] == b"\n")
            self._newline_tail = chunk[-1:] == b"\n"
            return ends
        buf = self._buffered + chunk
        done = 0
        pos = 0
        while len(buf) - pos >= 4:
            size = int.from_bytes(buf[pos : pos + 4], "big")
            if len(buf) - pos < size:
                break
            pos += size
            done += 1
        self._buffered = buf[pos:]
        return done


async def _paced_stream(target: Endpoint) -> tuple[float, list[float]]:
    """(time to first event, lateness of each event vs the upstream's schedule)."""
    source = target.payloads["paced"]
    sent = time.monotonic()
    first = 0.0
    late: list[float] = []
    digest = hashlib.sha256()
    counter = _EventCounter(frames=target.variant.surface == "bedrock")
    async with target.session.post(
        target.url("paced"), data=target.body("paced"), headers=target.headers
    ) as resp:
        if resp.status != 200:
            raise BenchError(f"{target.variant.name}: HTTP {resp.status}")
        t0 = float(resp.headers[T0_HEADER])
        async for chunk in resp.content.iter_any():
            now = time.monotonic()
            digest.update(chunk)
            for _ in range(counter.feed(chunk)):
                if not late:
                    first = now - sent
                late.append(now - (t0 + len(late) * source.interval))
    target.check("paced", digest.digest(), None)
    if len(late) != source.events:
        raise BenchError(f"{target.variant.name}/paced: {len(late)} events, not {source.events}")
    return first, late


async def paced_case(target: Endpoint, plan: Plan) -> Sample:
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
        results = await asyncio.gather(*(_paced_stream(target) for _ in range(n)))
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
