"""Shared fixtures: a fake Anthropic upstream and a gateway pointed at it, both on loopback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.app import make_app
from llmgw.config import GatewayConfig, ProviderConfig, StorageConfig
from llmgw.context import RequestContext, get_context
from llmgw.typedefs import Handler, Middleware
from tests.fakes.anthropic import FakeAnthropic

#: Session-wide secret-leak scan of logs and output files (see tests/secret_scan.py).
pytest_plugins = ("tests.secret_scan",)

GatewayClient = TestClient[web.Request, web.Application]
GatewayFactory = Callable[..., Awaitable[GatewayClient]]


def context_recorder() -> tuple[list[RequestContext], Middleware]:
    """A middleware that keeps every request's live context (not a copy), and the list."""
    seen: list[RequestContext] = []

    @web.middleware
    async def keep(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(get_context(request))
        return await handler(request)

    return seen, keep


@pytest.fixture
async def fake_anthropic(aiohttp_server: AiohttpServer) -> FakeAnthropic:
    fake = FakeAnthropic()
    await fake.start(aiohttp_server)
    return fake


def gateway_config(upstream_url: str, **overrides: object) -> GatewayConfig:
    """A config with one Anthropic provider at ``upstream_url`` and in-memory storage."""
    fields: dict[str, object] = {
        "providers": (ProviderConfig(name="anthropic", kind="anthropic", base_url=upstream_url),),
        "storage": StorageConfig(url="sqlite://:memory:"),
    }
    fields.update(overrides)
    return GatewayConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture
def gateway(aiohttp_client: AiohttpClient, fake_anthropic: FakeAnthropic) -> GatewayFactory:
    """``await gateway()`` → a test client for ``make_app`` in front of the fake upstream."""

    async def factory(config: GatewayConfig | None = None, **kwargs: object) -> GatewayClient:
        cfg = config or gateway_config(str(fake_anthropic.url))
        return await aiohttp_client(make_app(cfg, **kwargs))  # type: ignore[arg-type]

    return factory
