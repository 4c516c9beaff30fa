"""The processes `relay.py` measures, each run as its own child: `python _servers.py ROLE ...`.

* `upstream`: a fast fake provider. Every answer is pre-built bytes (see `payloads()`), so the
  upstream costs as little CPU as possible and the same bytes can be checked on arrival: SSE
  for the Messages API, the same events as Bedrock event-stream frames for
  `POST /model/{id}/invoke-with-response-stream`.
* `naive`: the in-run reference proxy — one shared `ClientSession`, `iter_any()` → `write()`,
  nothing else. What any aiohttp proxy costs at least; llmgw is judged against it.
* `gateway`: llmgw from `make_app`, or from an app factory (`module:function`, called with the
  `GatewayConfig`) for variants that need middlewares a config file cannot express.

Each prints one `listening on http://HOST:PORT` line once it accepts connections and serves
until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import importlib
import importlib.metadata
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run from a checkout without installing: make the repository root importable.
    sys.path.insert(0, str(ROOT))

from parsers import anthropic_events  # noqa: E402

from llmgw.config import ServerConfig  # noqa: E402
from llmgw.wire.eventstream import encode_bedrock_chunk  # noqa: E402
from llmgw.wire.sse import encode_event  # noqa: E402

__all__ = (
    "CASES",
    "EVENTSTREAM_TYPE",
    "T0_HEADER",
    "Payload",
    "loop_name",
    "main",
    "naive_app",
    "payload",
    "payloads",
    "upstream_app",
)

#: Response header carrying the upstream's `time.monotonic()` when it wrote the first event;
#: CLOCK_MONOTONIC is system-wide, so the driver computes each event's lateness from it.
T0_HEADER = "x-bench-t0"
SSE_TYPE = "text/event-stream; charset=utf-8"
EVENTSTREAM_TYPE = "application/vnd.amazon.eventstream"
BEDROCK_METRICS = "amazon-bedrock-invocationMetrics"
LARGE_WRITE = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Payload:
    """One pre-built upstream answer: what is written, in which writes, how fast."""

    #: The case (`short`, `large`, `paced`) and the wire format (`sse`, `bedrock`).
    name: str
    flavor: str
    writes: tuple[bytes, ...]
    events: int
    #: The Anthropic events (name, JSON) the writes carry, for checking a translated stream.
    source: tuple[tuple[str, bytes], ...]
    #: Seconds between two writes (write i is due at t0 + i * interval); 0: as fast as possible.
    interval: float = 0.0
    content_type: str = SSE_TYPE
    #: SHA-256 of all the writes: what every client must receive, byte for byte.
    sha256: bytes = b""
    size: int = 0


def payload(
    name: str,
    writes: list[bytes],
    *,
    source: list[tuple[str, bytes]],
    flavor: str = "sse",
    interval: float = 0.0,
    content_type: str = SSE_TYPE,
) -> Payload:
    return Payload(
        name=name,
        flavor=flavor,
        writes=tuple(writes),
        events=len(source),
        source=tuple(source),
        interval=interval,
        content_type=content_type,
        sha256=hashlib.sha256(b"".join(writes)).digest(),
        size=sum(map(len, writes)),
    )


def _bedrock_frames(events: list[tuple[str, bytes]]) -> list[bytes]:
    """The same events as Bedrock frames them: base64 in `{"bytes":...}`, a random-length
    `"p"` padding on each (as Bedrock adds), and invocation metrics on `message_stop`."""
    pad = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    frames = []
    for i, (name, data) in enumerate(events):
        if name == "message_stop":
            body = json.loads(data)
            body[BEDROCK_METRICS] = {
                "inputTokenCount": 12,
                "outputTokenCount": 25 * (len(events) - 5),
                "invocationLatency": 1200,
                "firstByteLatency": 300,
            }
            data = json.dumps(body, separators=(",", ":")).encode()
        frames.append(encode_bedrock_chunk(data, padding=pad[: 1 + (i * 7) % len(pad)]))
    return frames


def _chunked(data: bytes) -> list[bytes]:
    return [data[i : i + LARGE_WRITE] for i in range(0, len(data), LARGE_WRITE)]


def _build_payloads() -> dict[str, dict[str, Payload]]:
    sources = {
        "short": anthropic_events(20),
        "large": anthropic_events(20_000),
        "paced": anthropic_events(45),  # + 5 envelope events = 50
    }
    out: dict[str, dict[str, Payload]] = {"sse": {}, "bedrock": {}}
    for flavor, encode, content_type in (
        ("sse", lambda ev: [encode_event(n, d) for n, d in ev], SSE_TYPE),
        ("bedrock", _bedrock_frames, EVENTSTREAM_TYPE),
    ):
        for case, events in sources.items():
            writes = encode(events)
            # One write for short: a short answer leaves a real upstream in one or two
            # segments anyway; 64 KiB writes for large; one event per write for paced.
            chunks = _chunked(b"".join(writes)) if case == "large" else writes
            if case == "short":
                chunks = [b"".join(writes)]
            out[flavor][case] = payload(
                case,
                chunks,
                source=events,
                flavor=flavor,
                interval=0.02 if case == "paced" else 0.0,
                content_type=content_type,
            )
    return out


@functools.cache
def payloads() -> dict[str, dict[str, Payload]]:
    """Every answer the upstream can give: ``payloads()[flavor][case]``. The flavor is
    ``bedrock`` for ``POST /model/{id}/invoke-with-response-stream``, else ``sse``; the case
    is ``?case=NAME``, else ``bench-NAME`` in the path (for providers whose URL the gateway
    builds itself).

    Built on first use, by the upstream and the driver only: building them leaves ~20 MB of
    freed heap behind, which a proxy process would then grow into for free, and its RSS per
    open stream would look smaller than it is.
    """
    built = _build_payloads()
    assert tuple(built["sse"]) == CASES
    return built


CASES = ("short", "large", "paced")


def _payload_for(request: web.Request) -> Payload | None:
    flavor = "bedrock" if request.path.endswith("/invoke-with-response-stream") else "sse"
    name = request.query.get("case")
    if name is None:
        name = next((n for n in CASES if f"bench-{n}" in request.path), "short")
    return payloads()[flavor].get(name)


async def _upstream(request: web.Request) -> web.StreamResponse:
    await request.read()
    answer = _payload_for(request)
    if answer is None:
        return web.json_response({"type": "error"}, status=404)
    headers = {"content-type": answer.content_type, "cache-control": "no-cache"}
    if answer.flavor == "bedrock":
        headers["x-amzn-bedrock-content-type"] = "application/json"
        headers["x-amzn-requestid"] = "00000000-0000-4000-8000-000000000000"
    resp = web.StreamResponse(headers=headers)
    t0 = time.monotonic()
    resp.headers[T0_HEADER] = repr(t0)
    await resp.prepare(request)
    if answer.interval:
        for i, chunk in enumerate(answer.writes):
            delay = t0 + i * answer.interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await resp.write(chunk)
    else:
        for chunk in answer.writes:
            await resp.write(chunk)
    await resp.write_eof()
    return resp


def upstream_app() -> web.Application:
    payloads()  # built before the first request, not during it
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _upstream)
    return app


_SESSION = web.AppKey("bench.session", aiohttp.ClientSession)
_NOT_FORWARDED = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def naive_app(upstream: str) -> web.Application:
    """The least a streaming aiohttp proxy can do; same pool size and decoding as llmgw."""

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        ) as session:
            app[_SESSION] = session
            yield

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        async with request.app[_SESSION].request(
            request.method, upstream + request.path_qs, headers=headers, data=body
        ) as up:
            resp = web.StreamResponse(
                status=up.status,
                headers={k: v for k, v in up.headers.items() if k.lower() not in _NOT_FORWARDED},
            )
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def _gateway_app(config_path: str, factory: str | None) -> tuple[web.Application, ServerConfig]:
    from llmgw.app import make_app
    from llmgw.config import GatewayConfig, load_config

    config = load_config(config_path)
    build: Callable[[GatewayConfig], web.Application] = make_app
    if factory is not None:
        module, _, name = factory.partition(":")
        build = getattr(importlib.import_module(module), name)
    return build(config), config.server


def loop_name() -> str:
    """Install uvloop when it is importable (as `llmgw serve` does); returns which loop runs."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return f"uvloop {importlib.metadata.version('uvloop')}"


async def _serve(
    app: web.Application, *, port: int, backlog: int, loop: str, gateway: ServerConfig | None
) -> None:
    # handler_cancellation=False and no access log: what `llmgw serve` runs with at WARNING.
    runner = web.AppRunner(app, handler_cancellation=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=backlog)
        await site.start()
        if gateway is not None:  # the process tuned as `llmgw serve` tunes it
            from llmgw.commands.serve import tune_process

            tune_process(gateway)
        print(f"listening on http://127.0.0.1:{site.port} ({loop})", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("role", choices=("upstream", "naive", "gateway"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", help="naive: the upstream's base URL")
    parser.add_argument("-c", "--config", help="gateway: llmgw TOML config")
    parser.add_argument("--factory", help="gateway: module:function(GatewayConfig) -> app")
    args = parser.parse_args(argv)
    gateway = None
    if args.role == "upstream":
        app = upstream_app()
        backlog = 4096  # not under test: never let its accept queue shape a result
    elif args.role == "naive":
        app = naive_app(args.upstream.rstrip("/"))
        # The backlog `llmgw serve` listens with, so a burst of connects costs both the same.
        backlog = ServerConfig().backlog
    else:
        app, server = _gateway_app(args.config, args.factory)
        backlog, gateway = server.backlog, server
    loop = loop_name()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(app, port=args.port, backlog=backlog, loop=loop, gateway=gateway))
    return 0


if __name__ == "__main__":
    sys.exit(main())
