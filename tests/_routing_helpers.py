"""Shared pieces of the routing tests: config builders, a connection dropper, a context tap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from llmgw.config import GatewayConfig, parse_config

__all__ = ("HEADERS", "Dropper", "body", "routed_config")

HEADERS = {"anthropic-version": "2023-06-01"}


def body(model: str, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 50,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    }


def routed_config(
    upstreams: dict[str, str],
    routes: list[dict[str, Any]],
    *,
    routing: dict[str, Any] | None = None,
    **sections: Any,
) -> GatewayConfig:
    """A parsed config: one Anthropic-format provider per upstream, in-memory storage."""
    data: dict[str, Any] = {
        "providers": {
            name: {"kind": "anthropic", "base_url": url} for name, url in upstreams.items()
        },
        "storage": {"url": "sqlite://:memory:"},
        "metering": {"store": "memory", "journal": "off"},
        "routes": routes,
        "routing": routing or {},
    }
    data.update(sections)
    return parse_config(data)


class Dropper:
    """A TCP server that accepts every connection and closes it without a byte of answer."""

    def __init__(self) -> None:
        self.connections = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Dropper]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            self._server.close()
            await self._server.wait_closed()
