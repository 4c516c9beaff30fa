"""``llmgw serve``: run the gateway from a config file (or defaults)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal

from aiohttp import log as aiohttp_log
from aiohttp import web

from .. import __version__, _trim
from ..app import make_app
from ..config import GatewayConfig, ProviderConfig, ServerConfig, load_config
from ..errors import ConfigError
from ..keys import ROUTE_RELOADER
from ..routing.reload import RouteReloader

__all__ = ("register", "run")

log = logging.getLogger("llmgw")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("-c", "--config", help="TOML (or .json) config file")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port (0 picks a free port)")
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else GatewayConfig()
    server = config.server
    if args.host is not None:
        server = dataclasses.replace(server, host=args.host)
    if args.port is not None:
        server = dataclasses.replace(server, port=args.port)
    config = dataclasses.replace(config, server=server)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(_serve(config, args.config))
    return 0


async def _serve(config: GatewayConfig, path: str | None = None) -> None:
    runners: list[web.AppRunner] = []
    try:
        if not config.providers and not os.environ.get("ANTHROPIC_API_KEY"):
            config = await _with_demo_upstream(config, runners)
        elif not config.providers:
            config = dataclasses.replace(
                config, providers=(ProviderConfig(name="anthropic", kind="anthropic"),)
            )
        app = make_app(config)
        reloader = app[ROUTE_RELOADER]
        reloader.path = path  # SIGHUP re-reads the routes from the file
        # No access logger per connection (~0.1 KB each) when its lines would be dropped.
        access = aiohttp_log.access_logger
        runner = web.AppRunner(
            app,
            handler_cancellation=False,
            access_log=access if access.isEnabledFor(logging.INFO) else None,
        )
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(
            runner, config.server.host, config.server.port, backlog=config.server.backlog
        )
        await site.start()
        tune_process(config.server)
        log.info("llmgw %s listening on http://%s:%d", __version__, config.server.host, site.port)
        # One parseable line for scripts and tests that start the gateway on port 0.
        print(f"llmgw listening on http://{config.server.host}:{site.port}", flush=True)
        await _until_signalled(reloader)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def _with_demo_upstream(config: GatewayConfig, runners: list[web.AppRunner]) -> GatewayConfig:
    """No provider credentials: serve from the built-in demo upstream on a loopback port."""
    from ..demo import demo_app

    runner = web.AppRunner(demo_app(), access_log=None)
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site.port}"
    log.warning("no provider configured and ANTHROPIC_API_KEY unset: using the demo upstream")
    return dataclasses.replace(
        config, providers=(ProviderConfig(name="demo", kind="anthropic", base_url=url),)
    )


async def _reload(reloader: RouteReloader) -> None:
    try:
        await reloader.reload()
    except ConfigError as exc:
        log.error("route reload failed, keeping the current routes: %s", exc)


async def _until_signalled(reloader: RouteReloader) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(_reload(reloader))
        reloads.add(task)  # keep a reference until it is done
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()


def tune_process(server: ServerConfig) -> None:
    """What ``llmgw serve`` sets for the whole process once the gateway is up: the GC
    (:func:`tune_gc`) and, when configured, trimming the heap after large bodies."""
    tune_gc(server.gc_threshold)
    if server.malloc_trim:
        _trim.enable()


def tune_gc(threshold: int) -> None:
    """Settle the heap once the gateway is up: what startup built (config, routes, price
    tables, modules) moves to the permanent generation, never rescanned, and the
    young-generation ``threshold`` (``0``: Python's default) spaces collections out."""
    gc.collect()
    gc.freeze()
    if threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)
