"""App factories for the `-floor` rows: a feature's middleware with a sink that keeps nothing.

The middleware runs as shipped (metering's snapshots, audit's record, redaction and hash
chain) and the sink discards what it is given, so the row against bare `llmgw` is what the
feature costs before anything is journaled or stored: the least any implementation of it in
this process could cost. Select them by name (`interleaved.py --variants
llmgw,llmgw+metering-floor,llmgw+metering`); the full `relay.py` run leaves them out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from llmgw.app import make_app
from llmgw.audit.chain import GENESIS, SealedRecord
from llmgw.audit.writer import AuditWriter
from llmgw.config import GatewayConfig
from llmgw.metering.state import RecordEntry
from llmgw.middlewares.audit import audit_middleware
from llmgw.middlewares.metering import metering_middleware


class _DiscardUsage:
    async def submit(self, entry: RecordEntry) -> None:
        return None


class _DiscardAudit:
    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def head(self, chain: str) -> tuple[int, str]:
        return 0, GENESIS

    async def write(self, records: Sequence[SealedRecord]) -> None:
        return None


def metering_floor(config: GatewayConfig) -> web.Application:
    """Metering innermost, as `make_app` installs it, into a sink that drops every state."""
    return make_app(config, middlewares=(metering_middleware(_DiscardUsage()),))


def audit_floor(config: GatewayConfig) -> web.Application:
    """Batched audit outermost, as `make_app` installs it; sealed records are dropped."""
    writer = AuditWriter(_DiscardAudit(), chain="floor", mode="batched")
    app = make_app(config)

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await writer.open()
        yield
        await writer.close()

    app.cleanup_ctx.append(lifecycle)
    app.middlewares.insert(0, audit_middleware(writer))
    return app
