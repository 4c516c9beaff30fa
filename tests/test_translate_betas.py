"""Beta policy for translated requests, Vertex per-model regions, and errors on the Bedrock
surface in the shape AWS clients read."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import botocore.session
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient, AiohttpServer

from llmgw.betas import BEDROCK_BETAS, VERTEX_BETAS, BetaPolicy, beta_family
from llmgw.errors import ConfigError
from llmgw.providers import Provider, UpstreamCall
from llmgw.providers.bedrock import bedrock_provider as configured_bedrock
from llmgw.providers.vertex import VertexProvider
from llmgw.providers.vertex import vertex_provider as configured_vertex
from llmgw.typedefs import Operation
from tests.bedrock_vertex_gateway import (
    bedrock_provider,
    route,
    start_gateway,
    vertex_provider,
)
from tests.fakes.anthropic import Reply
from tests.fakes.bedrock import FakeBedrock
from tests.fakes.vertex import FakeVertex

#: Claude Code 2.1.197 through ANTHROPIC_BASE_URL (CLIENT-TRAFFIC.md §5), trimmed.
FIRST_PARTY_BETAS = [
    "claude-code-20250219",
    "context-1m-2025-08-07",
    "interleaved-thinking-2025-05-14",
    "thinking-token-count-2026-05-13",
    "context-management-2025-06-27",
    "prompt-caching-scope-2026-01-05",
    "mid-conversation-system-2026-04-07",
    "effort-2025-11-24",
]
EPHEMERAL = {"type": "ephemeral"}


def first_party_body() -> dict[str, Any]:
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                    {"type": "text", "text": "say hi", "cache_control": EPHEMERAL},
                ],
            },
            {"role": "system", "content": "Available agent types: claude"},
        ],
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197"},
            {"type": "text", "text": "You are Claude.", "cache_control": EPHEMERAL},
        ],
        "tools": [
            {"name": "Read", "description": "r", "input_schema": {"type": "object"}},
            {
                "name": "Grep",
                "description": "g",
                "input_schema": {"type": "object"},
                "defer_loading": True,
                "strict": True,
            },
        ],
        "max_tokens": 64000,
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
    }


# -- the policy ---------------------------------------------------------------------------------


def test_beta_family_cuts_the_date() -> None:
    assert beta_family("context-management-2025-06-27") == "context-management"
    assert beta_family("claude-code-20250219") == "claude-code"
    assert beta_family("custom") == "custom"


def test_filter_drops_unknown_betas_and_the_fields_they_gate() -> None:
    body = first_party_body()
    original = copy.deepcopy(body)
    policy = BetaPolicy.filter(["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"])

    result = policy.apply(body, list(FIRST_PARTY_BETAS))

    assert result.betas == ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]
    assert "mid-conversation-system-2026-04-07" in result.dropped_betas
    assert "context_management" not in result.body and "output_config" not in result.body
    assert result.body["tools"][1] == {
        "name": "Grep",
        "description": "g",
        "input_schema": {"type": "object"},
    }
    assert set(result.dropped_fields) >= {
        "context_management",
        "output_config.effort",
        "output_config",
        "tools.1.defer_loading",
        "tools.1.strict",
        "messages.1",
    }
    # Untouched: adaptive thinking (no beta), system blocks in order, cache_control.
    assert result.body["thinking"] == {"type": "adaptive"}
    assert result.body["system"] == original["system"]
    assert body == original  # the client's parsed body is never mutated


def test_fields_whose_beta_survives_are_kept() -> None:
    body = first_party_body()
    body["output_config"] = {"effort": "high", "format": {"type": "json_schema"}}

    result = BetaPolicy.filter(BEDROCK_BETAS).apply(body, list(FIRST_PARTY_BETAS))

    assert result.body["context_management"] == body["context_management"]
    assert result.body["output_config"] == {"effort": "high"}  # no structured-outputs beta
    assert result.betas == [
        "context-1m-2025-08-07",
        "interleaved-thinking-2025-05-14",
        "context-management-2025-06-27",
        "effort-2025-11-24",
    ]


def test_system_message_text_ends_the_user_turn_before_it() -> None:
    result = BetaPolicy.filter(BEDROCK_BETAS).apply(first_party_body(), list(FIRST_PARTY_BETAS))

    messages = result.body["messages"]
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"][1]["cache_control"] == EPHEMERAL  # breakpoint unmoved
    assert messages[0]["content"][-1] == {
        "type": "text",
        "text": "<system-reminder>\nAvailable agent types: claude\n</system-reminder>",
    }


def test_system_message_after_a_tool_call_goes_after_the_tool_result() -> None:
    result_block = {"type": "tool_result", "tool_use_id": "t1", "content": "no such file"}
    body = {
        "messages": [
            {"role": "user", "content": "read it"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read"}]},
            {
                "role": "system",
                "content": [{"type": "text", "text": "note", "cache_control": EPHEMERAL}],
            },
            {"role": "user", "content": [result_block]},
            {"role": "assistant", "content": "done"},
            {"role": "system", "content": "late"},
        ]
    }

    out = BetaPolicy.filter(()).apply(body, ["mid-conversation-system-2026-04-07"]).body

    messages = out["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"][0] == result_block  # tool_result still leads its turn
    assert messages[2]["content"][1] == {
        "type": "text",
        "text": "<system-reminder>\nnote\n</system-reminder>",
        "cache_control": EPHEMERAL,
    }
    assert messages[4]["content"] == [
        {"type": "text", "text": "<system-reminder>\nlate\n</system-reminder>"}
    ]


def test_allowed_mid_conversation_system_keeps_system_messages() -> None:
    body = first_party_body()
    policy = BetaPolicy.filter(["mid-conversation-system-2026-04-07"])

    result = policy.apply(body, ["mid-conversation-system-2026-04-07"])

    assert result.body["messages"] == body["messages"]


def test_cache_scope_needs_its_beta() -> None:
    scoped = {"type": "ephemeral", "scope": "global"}
    body = {"system": [{"type": "text", "text": "s", "cache_control": scoped}], "messages": []}

    dropped = BetaPolicy.filter(()).apply(body, ["prompt-caching-scope-2026-01-05"])
    kept = BetaPolicy.filter(["prompt-caching-scope-2026-01-05"]).apply(
        body, ["prompt-caching-scope-2026-01-05"]
    )

    assert dropped.body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert dropped.dropped_fields == ("system.0.cache_control.scope",)
    assert kept.body["system"][0]["cache_control"] == scoped


def test_passthrough_forwards_everything() -> None:
    body = first_party_body()

    result = BetaPolicy.passthrough().apply(body, list(FIRST_PARTY_BETAS))

    assert result.body is body and result.betas == FIRST_PARTY_BETAS
    assert result.dropped_betas == () and result.dropped_fields == ()


# -- configuration --------------------------------------------------------------------------------


def test_provider_options_choose_the_policy() -> None:
    default = configured_bedrock(
        name="b", base_url=None, api_key_env=None, options={"region": "us-east-1"}
    )
    passthrough = configured_bedrock(
        name="b",
        base_url=None,
        api_key_env=None,
        options={"region": "us-east-1", "betas": "passthrough"},
    )
    custom = configured_vertex(
        name="v",
        base_url=None,
        api_key_env=None,
        options={"region": "us-east5", "allowed_betas": ["effort-2025-11-24"]},
    )
    vertex_default = configured_vertex(
        name="v", base_url=None, api_key_env=None, options={"region": "us-east5"}
    )

    assert default.beta_policy == BetaPolicy.filter(BEDROCK_BETAS)
    assert passthrough.beta_policy.mode == "passthrough"
    assert custom.beta_policy == BetaPolicy.filter(["effort-2025-11-24"])
    assert vertex_default.beta_policy == BetaPolicy.filter(VERTEX_BETAS)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"betas": "strip"}, 'providers.v.betas: expected "filter" or "passthrough"'),
        ({"betas": "passthrough", "allowed_betas": []}, "only used with betas"),
        ({"allowed_betas": "effort-2025-11-24"}, "expected a list of beta names"),
        ({"allowed_betas": [1]}, "expected a list of beta names"),
        ({"model_regions": ["europe-west1"]}, "model_regions: expected a table"),
        ({"model_regions": {"claude-x": 5}}, "model_regions: expected a table"),
    ],
)
def test_policy_and_region_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        configured_vertex(
            name="v", base_url=None, api_key_env=None, options={"region": "us-east5", **options}
        )


# -- through the gateway ------------------------------------------------------------------------


def anthropic_request() -> dict[str, Any]:
    return {"model": "us.anthropic.claude-x-v1:0", **first_party_body()}


async def test_strict_bedrocks_400_reaches_an_anthropic_client_verbatim_with_passthrough(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    fake = FakeBedrock(strict=True)
    await fake.start(aiohttp_server)
    passthrough = BetaPolicy.passthrough()
    gw = await start_gateway(aiohttp_client, {"b": bedrock_provider(fake, beta_policy=passthrough)})
    headers = {"anthropic-beta": ",".join(FIRST_PARTY_BETAS), "anthropic-version": "2023-06-01"}

    resp = await gw.post("/v1/messages", json=anthropic_request(), headers=headers)

    assert resp.status == 400
    assert await resp.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "invalid beta flag"},
    }
    assert "x-amzn-errortype" not in resp.headers
    assert json.loads(fake.requests[0].body)["anthropic_beta"] == FIRST_PARTY_BETAS


async def test_default_policy_satisfies_strict_bedrock_and_vertex(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    bedrock = FakeBedrock(strict=True)
    vertex = FakeVertex(strict=True)
    await bedrock.start(aiohttp_server)
    await vertex.start(aiohttp_server)
    providers: dict[str, Provider] = {"b": bedrock_provider(bedrock), "v": vertex_provider(vertex)}
    routes = [route("to-bedrock", "b", "us.anthropic.x-v1:0"), route("to-vertex", "v", "claude-x")]
    gw = await start_gateway(aiohttp_client, providers, routes=routes)
    headers = {"anthropic-beta": ",".join(FIRST_PARTY_BETAS), "anthropic-version": "2023-06-01"}

    for model in ("to-bedrock", "to-vertex"):
        body = {**first_party_body(), "model": model}
        resp = await gw.post("/v1/messages?beta=true", json=body, headers=headers)
        assert resp.status == 200, await resp.text()

    assert bedrock.rejections == [] and vertex.rejections == []
    assert "claude-code-20250219" not in json.loads(bedrock.requests[0].body)["anthropic_beta"]
    assert "claude-code-20250219" in vertex.requests[0].headers["anthropic-beta"]


async def test_same_format_requests_are_never_filtered(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    fake = FakeBedrock(strict=True)
    await fake.start(aiohttp_server)
    gw = await start_gateway(aiohttp_client, {"b": bedrock_provider(fake)})
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["prompt-caching-scope-2026-01-05"],
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }

    resp = await gw.post("/model/us.anthropic.x-v1:0/invoke", json=body)

    assert resp.status == 400
    assert resp.headers["x-amzn-errortype"] == "ValidationException"
    assert await resp.json() == {"message": "invalid beta flag"}
    assert json.loads(fake.requests[0].body) == body


# -- Vertex per-model regions -------------------------------------------------------------------


def _call(model: str, operation: Operation = Operation.MESSAGES) -> UpstreamCall:
    return UpstreamCall(
        operation=operation, stream=False, model=model, body=b"{}", headers=CIMultiDict()
    )


def test_model_regions_pick_host_and_location() -> None:
    provider = VertexProvider(
        project="p",
        region="us-east5",
        access_token="t",
        model_regions={"claude-haiku-4-5": "europe-west1", "claude-opus-4-6": "global"},
    )

    haiku = asyncio.run(provider.build(_call("claude-haiku-4-5@20251001")))
    opus = asyncio.run(provider.build(_call("claude-opus-4-6")))
    sonnet = asyncio.run(provider.build(_call("claude-sonnet-4-5@20250929")))
    counted = asyncio.run(provider.build(_call("claude-haiku-4-5", Operation.COUNT_TOKENS)))

    assert str(haiku.url) == (
        "https://europe-west1-aiplatform.googleapis.com/v1/projects/p/locations/europe-west1"
        "/publishers/anthropic/models/claude-haiku-4-5@20251001:rawPredict"
    )
    assert str(opus.url).startswith(
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/"
    )
    assert "us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/" in str(sonnet.url)
    assert "/locations/europe-west1/publishers/anthropic/models/count-tokens:rawPredict" in str(
        counted.url
    )


async def test_model_regions_through_the_gateway(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    fake = FakeVertex(Reply(text="from europe"), region="europe-west1")
    await fake.start(aiohttp_server)
    provider = vertex_provider(fake, model_regions={"claude-haiku-4-5": "europe-west1"})
    provider.region = "us-east5"  # the provider's default region differs from the fake's
    gw = await start_gateway(aiohttp_client, {"v": provider})
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}

    ok = await gw.post("/v1/messages", json={**body, "model": "claude-haiku-4-5@20251001"})
    other = await gw.post("/v1/messages", json={**body, "model": "claude-sonnet-4-5@20250929"})

    assert ok.status == 200, await ok.text()
    assert (await ok.json())["content"][0]["text"] == "from europe"
    assert "/locations/europe-west1/" in fake.requests[0].path
    assert other.status == 403  # the fake serves only europe-west1
    assert "/locations/us-east5/" in fake.requests[1].path


# -- errors on the Bedrock surface --------------------------------------------------------------


async def test_gateway_errors_reach_boto3_with_code_and_message(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    fake = FakeBedrock()
    await fake.start(aiohttp_server)
    routes = [route("us.anthropic.claude-routed-v1:0", "b")]
    gw = await start_gateway(aiohttp_client, {"b": bedrock_provider(fake)}, routes=routes)
    session = botocore.session.get_session()
    client = session.create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=str(gw.make_url("")),
        aws_access_key_id="AKIDCLIENT",
        aws_secret_access_key="client-secret",
        config=BotoConfig(retries={"max_attempts": 1}),
    )
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": []})

    def invoke() -> ClientError:
        with pytest.raises(ClientError) as caught:
            client.invoke_model(modelId="us.anthropic.claude-unrouted-v1:0", body=body)
        return caught.value

    error = await asyncio.to_thread(invoke)

    assert error.response["Error"]["Code"] == "ResourceNotFoundException"
    assert "us.anthropic.claude-unrouted-v1:0" in error.response["Error"]["Message"]
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert fake.requests == []


async def test_gateway_errors_on_the_bedrock_surface_keep_the_anthropic_envelope(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    fake = FakeBedrock()
    await fake.start(aiohttp_server)
    gw = await start_gateway(aiohttp_client, {"b": bedrock_provider(fake)})

    bedrock = await gw.post("/model/us.anthropic.x-v1:0/invoke", data=b"{not json")
    anthropic = await gw.post("/v1/messages", data=b"{not json")

    assert bedrock.status == anthropic.status == 400
    payload = await bedrock.json()
    assert bedrock.headers["x-amzn-errortype"] == "ValidationException"
    assert payload["message"] == payload["error"]["message"]
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert "x-amzn-errortype" not in anthropic.headers
    assert "message" not in await anthropic.json()
