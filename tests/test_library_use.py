"""The README's library example: the whole gateway mounted under a prefix of someone else's
application, with the public API imported from the package root."""

from __future__ import annotations

import tomllib
from pathlib import Path

import anthropic
from aiohttp import web
from pytest_aiohttp import AiohttpClient

import llmgw
from llmgw import GatewayConfig, ProviderConfig, StorageConfig, make_app, parse_config
from tests.fakes.anthropic import FakeAnthropic


def test_public_api_is_exported_and_sorted() -> None:
    assert list(llmgw.__all__) == sorted(llmgw.__all__)
    assert set(llmgw.__all__) == {"__version__", *llmgw._EXPORTS}
    for name in llmgw.__all__:
        assert getattr(llmgw, name) is not None


async def test_gateway_mounted_as_a_sub_application_serves_the_sdk(
    aiohttp_client: AiohttpClient, fake_anthropic: FakeAnthropic
) -> None:
    config = GatewayConfig(
        providers=(
            ProviderConfig(name="anthropic", kind="anthropic", base_url=str(fake_anthropic.url)),
        ),
        storage=StorageConfig(url="sqlite://:memory:"),
    )
    # The parent decides the request size limit: aiohttp applies the root app's.
    parent = web.Application(client_max_size=config.server.client_max_size)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    parent.router.add_get("/healthz", health)
    parent.add_subapp("/llm", make_app(config))
    client = await aiohttp_client(parent)

    async with anthropic.AsyncAnthropic(
        base_url=str(client.make_url("/llm")), api_key="client-key", max_retries=0
    ) as sdk:
        message = await sdk.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=32,
            messages=[{"role": "user", "content": "hello"}],
        )
    assert message.model == "claude-sonnet-4-6"
    assert message.content[0].type == "text"
    assert fake_anthropic.requests[-1].path_qs == "/v1/messages"
    assert (await client.get("/healthz")).status == 200
    missing = await client.get("/llm/nope")
    assert missing.status == 404
    assert (await missing.json())["error"]["type"] == "not_found_error"


def test_readme_config_example_is_valid() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse_config(tomllib.loads(block))
    assert [p.kind for p in config.providers] == ["anthropic", "bedrock", "vertex"]
    assert config.routes[0].aliases == ("sonnet",)
    assert config.auth.enabled and config.auth.jwt is not None
    assert config.limits.enabled and config.audit.mode == "sync"
