"""What the audit log costs: throughput and added time to first byte, audit off / batched / sync.

Everything runs in one process on loopback (upstream, gateway, client), so absolute numbers
include the client's own CPU; the variants are compared in the same run, interleaved in
rounds so drift hits them equally. ``cpu/req`` is the process's CPU time per request during
the throughput runs: on a shared machine it is steadier than req/s, and its difference to
``off`` is what auditing costs. Targets (issue 7): batched within 5 % of off on throughput,
sync on SQLite under 1 ms p50 added TTFB.

``sync-serial`` is sync mode as it was before group commit (one commit per record under
one lock), kept here as the A/B baseline for ``sync``.

    python benchmarks/audit.py [--requests 300] [--seconds 2] [--concurrency 16]

Variant configs (also for benchmarks/relay.py), on top of the same gateway config:
``off``: ``[audit] enabled = false``; ``batched``: the default (no ``[audit]`` table: mode
``batched``, SQLite at ``storage.url``); ``sync``: ``[audit] mode = "sync"``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llmgw.app import make_app  # noqa: E402
from llmgw.audit.chain import SealedRecord  # noqa: E402
from llmgw.audit.writer import AuditUnavailableError, AuditWriter  # noqa: E402
from llmgw.config import AuditConfig, GatewayConfig, ProviderConfig, StorageConfig  # noqa: E402
from llmgw.demo import DemoUsage, message_events, sse_bytes  # noqa: E402
from llmgw.keys import AUDIT  # noqa: E402
from llmgw.typedefs import JSON  # noqa: E402

BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}
VARIANTS = ("off", "batched", "sync", "sync-serial")


def upstream_app() -> web.Application:
    events = message_events(
        model="claude-sonnet-4-5",
        text="Hello " * 20,
        thinking=None,
        tool_use=None,
        usage=DemoUsage(),
    )
    payload = sse_bytes(events)

    async def messages(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(payload)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    return app


async def serve(app: web.Application, runners: list[web.AppRunner]) -> str:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return f"http://127.0.0.1:{port}"


def config(variant: str, upstream: str, tmp: Path) -> GatewayConfig:
    audit = AuditConfig(enabled=False)
    if variant != "off":
        mode = variant.removesuffix("-serial")
        audit = AuditConfig(enabled=True, mode=mode, chain=f"bench-{variant}")
    return GatewayConfig(
        providers=(ProviderConfig(name="anthropic", kind="anthropic", base_url=upstream),),
        storage=StorageConfig(url=f"sqlite:///{tmp / f'{variant}.db'}"),
        audit=audit,
    )


async def _one_commit_per_record(writer: AuditWriter, record: JSON) -> SealedRecord:
    """The pre-group-commit sync append: seal and write each record alone, under a lock."""
    async with writer._lock:
        sealed = writer._seal(record)
        try:
            await writer.sink.write([sealed])
        except Exception:
            assert writer._chain is not None
            writer._chain.reset(sealed.seq - 1, sealed.prev_hash)
            raise AuditUnavailableError("the audit log is unavailable") from None
    return sealed


def serialise_commits(app: web.Application) -> None:
    writer = app[AUDIT]

    async def append(record: JSON) -> None:
        await _one_commit_per_record(writer, record)

    writer.append = append  # type: ignore[method-assign]


async def ttfb(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.post(url, json=BODY) as resp:
            await resp.content.readany()
            samples.append(time.perf_counter() - t0)
            await resp.read()
    return samples


async def throughput(
    session: aiohttp.ClientSession, url: str, seconds: float, conc: int
) -> tuple[float, float]:
    """(requests per second, CPU seconds per request)."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with session.post(url, json=BODY) as resp:
                await resp.read()
            done += 1

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return done / (time.perf_counter() - t0), (time.process_time() - cpu0) / max(done, 1)


async def main(args: argparse.Namespace) -> None:
    runners: list[web.AppRunner] = []
    with tempfile.TemporaryDirectory(prefix="llmgw-audit-bench-") as tmpdir:
        try:
            upstream = await serve(upstream_app(), runners)
            urls = {}
            writers: dict[str, AuditWriter] = {}
            for v in VARIANTS:
                app = make_app(config(v, upstream, Path(tmpdir)))
                urls[v] = await serve(app, runners) + "/v1/messages"
                if v != "off":
                    writers[v] = app[AUDIT]
                if v == "sync-serial":
                    serialise_commits(app)
            lat: dict[str, list[float]] = {v: [] for v in VARIANTS}
            rps: dict[str, list[float]] = {v: [] for v in VARIANTS}
            cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn) as session:
                for v in VARIANTS:  # warm-up
                    await ttfb(session, urls[v], 20)
                for _ in range(args.rounds):
                    for v in VARIANTS:
                        lat[v] += await ttfb(session, urls[v], args.requests // args.rounds)
                    for v in VARIANTS:
                        r, c = await throughput(
                            session, urls[v], args.seconds / args.rounds, args.concurrency
                        )
                        rps[v].append(r)
                        cpu[v].append(c)
            sync = writers["sync"]
            group = f"{sync.committed} records in {sync.commits} commits"
        finally:
            for runner in reversed(runners):
                await runner.cleanup()
    base_p50 = statistics.median(lat["off"])
    base_rps = statistics.median(rps["off"])
    base_cpu = statistics.median(cpu["off"])
    print(
        f"{'variant':11} {'ttfb p50':>10} {'added p50':>10} {'p99':>9} {'req/s':>8}"
        f" {'vs off':>8} {'cpu/req':>9} {'vs off':>8}"
    )
    for v in VARIANTS:
        p50 = statistics.median(lat[v])
        p99 = statistics.quantiles(lat[v], n=100)[98]
        r = statistics.median(rps[v])
        c = statistics.median(cpu[v])
        print(
            f"{v:11} {p50 * 1e3:9.3f}ms {(p50 - base_p50) * 1e3:9.3f}ms {p99 * 1e3:8.3f}ms"
            f" {r:8.0f} {(r / base_rps - 1) * 100:+7.1f}% {c * 1e6:7.0f}us"
            f" {(c / base_cpu - 1) * 100:+7.1f}%"
        )
    print(f"sync group commit: {group} (sync-serial: one commit per record)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    asyncio.run(main(parser.parse_args()))
