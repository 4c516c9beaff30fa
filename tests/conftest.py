"""Shared fixtures: a fake Anthropic upstream and a gateway pointed at it, both on loopback."""

from __future__ import annotations

import copy
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


def live_contexts(into: list[RequestContext]) -> Middleware:
    """Test-only: each request's live context (not a copy), recorded as the request enters."""

    @web.middleware
    async def _live(request: web.Request, handler: Handler) -> web.StreamResponse:
        into.append(get_context(request))
        return await handler(request)

    return _live


def context_copies(into: list[RequestContext]) -> Middleware:
    """Test-only: a copy of each request's context as the handler left it.

    A copy, because outer middlewares (metering) may reclassify the outcome on their way
    out; tests of what the relay itself recorded read it before they do.
    """

    @web.middleware
    async def _copy(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            into.append(copy.copy(get_context(request)))

    return _copy


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
