"""Gateways in front of the Bedrock/Vertex/Anthropic fakes, for the cross-format tests.

Providers are passed as instances (no environment needed), and every request's context is
kept so a test can assert what the relay recorded (usage, outcome, deployment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from llmgw.app import make_app
from llmgw.betas import BetaPolicy
from llmgw.config import (
    AuthConfig,
    DeploymentConfig,
    GatewayConfig,
    RouteConfig,
    StorageConfig,
    UpstreamConfig,
)
from llmgw.context import RequestContext
from llmgw.providers import AnthropicProvider, Provider
from llmgw.providers.bedrock import BedrockProvider
from llmgw.providers.vertex import VertexProvider
from llmgw.typedefs import Handler, Middleware
from tests.conftest import live_contexts
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.bedrock import FakeBedrock, gateway_credentials
from tests.fakes.vertex import TEST_TOKEN, FakeVertex

__all__ = (
    "Gateway",
    "anthropic_provider",
    "bedrock_provider",
    "route",
    "start_gateway",
    "vertex_provider",
)

Gateway = TestClient[web.Request, web.Application]


def bedrock_provider(
    fake: FakeBedrock, *, bearer_token: str | None = None, beta_policy: BetaPolicy | None = None
) -> BedrockProvider:
    return BedrockProvider(
        name="bedrock",
        region=fake.region,
        base_url=str(fake.url),
        bearer_token=bearer_token,
        credentials=gateway_credentials(),
        beta_policy=beta_policy,
    )


def vertex_provider(
    fake: FakeVertex,
    *,
    beta_policy: BetaPolicy | None = None,
    model_regions: Mapping[str, str] | None = None,
) -> VertexProvider:
    return VertexProvider(
        name="vertex",
        project=fake.project,
        region=fake.region,
        base_url=str(fake.url),
        access_token=TEST_TOKEN,
        beta_policy=beta_policy,
        model_regions=model_regions,
    )


def anthropic_provider(fake: FakeAnthropic) -> AnthropicProvider:
    return AnthropicProvider(name="anthropic", base_url=str(fake.url))


def route(model: str, provider: str, upstream_model: str | None = None) -> RouteConfig:
    return RouteConfig(
        model=model, deployments=(DeploymentConfig(provider=provider, model=upstream_model),)
    )


async def start_gateway(
    aiohttp_client: AiohttpClient,
    providers: Mapping[str, Provider],
    *,
    routes: Sequence[RouteConfig] = (),
    ping_interval: float = 10.0,
    contexts: list[RequestContext] | None = None,
    auth: AuthConfig | None = None,
    seen: list[str] | None = None,
) -> Gateway:
    """A gateway with ``providers`` (the first one serves unrouted models).

    ``contexts`` collects the context of every request that got past the gateway's own
    middlewares; ``seen`` the method and path of every request that arrived at all.
    """
    config = GatewayConfig(
        storage=StorageConfig(url="sqlite://:memory:"),
        upstream=UpstreamConfig(ping_interval=ping_interval, disconnect_poll_interval=0.05),
        routes=tuple(routes),
        auth=auth or AuthConfig(),
    )
    store = contexts if contexts is not None else []
    app = make_app(config, providers=providers, middlewares=(live_contexts(store),))
    if seen is not None:
        app.middlewares.insert(0, _record(seen))
    return await aiohttp_client(app)


def _record(seen: list[str]) -> Middleware:
    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path}")
        return await handler(request)

    return record
