"""The Bedrock and Vertex providers: credentials, signing, endpoints, configuration."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import threading
import time

import pytest
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.app import make_app
from llmgw.config import GatewayConfig, ProviderConfig, StorageConfig
from llmgw.errors import ConfigError
from llmgw.providers import UpstreamCall, build_provider
from llmgw.providers.bedrock import BedrockProvider
from llmgw.providers.vertex import VertexProvider
from llmgw.typedefs import Operation
from tests.fakes.bedrock import TEST_ACCESS_KEY, TEST_SECRET_KEY, FakeBedrock
from tests.fakes.vertex import FakeVertex

BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 8, "messages": []}


def call(model: str = "claude-x", *, stream: bool = False) -> UpstreamCall:
    return UpstreamCall(
        operation=Operation.MESSAGES,
        stream=stream,
        model=model,
        body=b"{}",
        headers=CIMultiDict({"x-stainless-lang": "python"}),
    )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ("AWS_BEARER_TOKEN_BEDROCK", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/llmgw-aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/llmgw-aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)


@pytest.mark.usefixtures("aws_env")
async def test_configured_bedrock_provider_signs_with_the_environment_chain(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-from-sts")
    fake = FakeBedrock()
    await fake.start(aiohttp_server)
    provider = ProviderConfig(
        name="aws", kind="bedrock", base_url=str(fake.url), options={"region": "us-east-1"}
    )
    config = GatewayConfig(providers=(provider,), storage=StorageConfig(url="sqlite://:memory:"))
    gw = await aiohttp_client(make_app(config))

    resp = await gw.post(
        "/model/us.anthropic.claude-x-v1:0/invoke",
        json=BODY,
        headers={"Authorization": "AWS4-HMAC-SHA256 Credential=CLIENT/...", "X-Amz-Date": "x"},
    )

    assert resp.status == 200, await resp.text()
    assert fake.auth_failures == []
    sent = fake.requests[0]
    assert sent.headers["x-amz-security-token"] == "session-token-from-sts"
    assert "x-amz-security-token" in sent.headers["authorization"]  # inside SignedHeaders
    assert "CLIENT" not in sent.headers["authorization"]


@pytest.mark.usefixtures("aws_env")
async def test_a_tampered_request_fails_the_fakes_signature_check(
    aiohttp_server: AiohttpServer,
) -> None:
    fake = FakeBedrock()
    await fake.start(aiohttp_server)
    provider = build_provider(
        ProviderConfig(
            name="aws", kind="bedrock", base_url=str(fake.url), options={"region": "us-east-1"}
        )
    )
    request = await provider.build(call("us.anthropic.x-v1:0"))
    request.headers["x-stainless-lang"] = "tampered"

    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(request.url, headers=request.headers, data=request.body) as resp,
    ):
        assert resp.status == 403
    assert fake.auth_failures == ["signature mismatch"]


@pytest.mark.usefixtures("aws_env")
def test_bedrock_api_key_from_the_environment_replaces_sigv4(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-key")
    provider = build_provider(
        ProviderConfig(name="b", kind="bedrock", options={"region": "eu-west-1"})
    )

    request = asyncio.run(provider.build(call("eu.anthropic.x-v1:0", stream=True)))

    assert request.headers["authorization"] == "Bearer bedrock-key"
    assert str(request.url) == (
        "https://bedrock-runtime.eu-west-1.amazonaws.com/model/"
        "eu.anthropic.x-v1%3A0/invoke-with-response-stream"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"region": "us-east-1", "regoin": "x"}, "providers.b.regoin: unknown bedrock option"),
        ({"region": 5}, "providers.b.region: expected a string"),
        ({"bearer_token_env": "LLMGW_UNSET_VAR", "region": "r"}, "LLMGW_UNSET_VAR is empty"),
    ],
)
def test_bedrock_options_are_validated(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_provider(ProviderConfig(name="b", kind="bedrock", options=options))


def test_bedrock_region_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConfigError, match=r"providers\.b\.region: required"):
        build_provider(ProviderConfig(name="b", kind="bedrock"))


def test_bedrock_repr_shows_no_secret() -> None:
    provider = BedrockProvider(region="us-east-1", bearer_token="very-secret")
    assert "very-secret" not in repr(provider)


class SlowCredentials:
    """google-auth's credentials interface: ``token``, ``expiry``, blocking ``refresh``."""

    def __init__(self, lifetime: dt.timedelta) -> None:
        self.token: str | None = None
        self.expiry: dt.datetime | None = None
        self.refreshes = 0
        self.lifetime = lifetime
        self.threads: set[int] = set()

    def refresh(self, request: object) -> None:
        time.sleep(0.05)  # a real refresh is an HTTP call
        self.threads.add(threading.get_ident())
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"
        self.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + self.lifetime


async def test_vertex_token_refresh_happens_once_under_the_lock_off_the_loop() -> None:
    creds = SlowCredentials(dt.timedelta(hours=1))
    provider = VertexProvider(
        project="p", region="us-east5", credentials=creds, request_factory=object
    )

    tokens = await asyncio.gather(*(provider.token() for _ in range(10)))

    assert tokens == ["token-1"] * 10
    assert creds.refreshes == 1
    assert threading.get_ident() not in creds.threads


async def test_vertex_token_near_expiry_is_refreshed() -> None:
    creds = SlowCredentials(dt.timedelta(minutes=2))  # inside the 5-minute margin
    provider = VertexProvider(
        project="p", region="global", credentials=creds, request_factory=object
    )

    assert await provider.token() == "token-1"
    assert await provider.token() == "token-2"


async def test_vertex_endpoints_regional_and_global() -> None:
    regional = VertexProvider(project="p", region="us-east5", access_token="t")
    global_ = VertexProvider(project="p", region="global", access_token="t")

    one = await regional.build(call("claude-sonnet-4-5@20250929", stream=True))
    two = await global_.build(call("claude-sonnet-4-6"))

    assert str(one.url) == (
        "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5"
        "/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict"
    )
    assert str(two.url) == (
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global"
        "/publishers/anthropic/models/claude-sonnet-4-6:rawPredict"
    )
    assert one.headers["authorization"] == "Bearer t"


async def test_configured_vertex_provider_with_a_token_from_the_environment(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeVertex()
    await fake.start(aiohttp_server)
    monkeypatch.setenv("LLMGW_TEST_VERTEX_TOKEN", fake.token)
    provider = ProviderConfig(
        name="gcp",
        kind="vertex",
        base_url=str(fake.url),
        options={
            "project": fake.project,
            "region": fake.region,
            "access_token_env": "LLMGW_TEST_VERTEX_TOKEN",
        },
    )
    config = GatewayConfig(providers=(provider,), storage=StorageConfig(url="sqlite://:memory:"))
    gw = await aiohttp_client(make_app(config))

    resp = await gw.post(
        "/v1/messages", json={"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": []}
    )

    assert resp.status == 200
    assert (await resp.json())["model"] == "claude-sonnet-4-6"
    assert fake.model_ids == ["claude-sonnet-4-6"]


def test_vertex_options_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"providers\.v\.projct: unknown vertex option"):
        build_provider(
            ProviderConfig(name="v", kind="vertex", options={"region": "r", "projct": "p"})
        )
