"""Which headers cross the gateway, checked on the pure functions."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient
from yarl import URL

from llmgw.app import make_app
from llmgw.config import ProviderConfig
from llmgw.context import RequestContext
from llmgw.headers import (
    ACCEPT_ENCODING,
    ANTHROPIC_VERSION,
    CONTENT_TYPE,
    X_API_KEY,
    forward_request_headers,
    forward_response_headers,
)
from llmgw.providers.anthropic import AnthropicProvider
from llmgw.providers.base import UpstreamCall
from llmgw.typedefs import Operation
from tests.conftest import GatewayFactory, gateway_config, live_contexts
from tests.fakes.anthropic import FakeAnthropic, Reply

BETAS = ",".join(
    [
        "claude-code-20250219",
        "oauth-2025-04-20",
        "interleaved-thinking-2025-05-14",
        "fine-grained-tool-streaming-2025-05-14",
        "context-management-2025-06-27",
        "prompt-caching-scope-2026-01-05",
        "effort-2025-11-24",
        "context-1m-2025-08-07",
    ]
)


def test_request_keeps_anthropic_and_unknown_headers_verbatim() -> None:
    incoming = CIMultiDict(
        {
            "anthropic-beta": BETAS,
            "anthropic-version": "2023-06-01",
            "anthropic-foo": "Bar, Baz",
            "x-stainless-lang": "js",
            "X-Something-New": "1",
            "user-agent": "claude-cli/2.1.1 (external, cli)",
            "content-type": "application/json",
        }
    )
    out = forward_request_headers(incoming)
    for name, value in incoming.items():
        assert out.getall(name) == [value]


def test_request_drops_credentials_hop_by_hop_and_recomputed_headers() -> None:
    incoming = CIMultiDict(
        {
            "authorization": "Bearer client-secret",
            "x-api-key": "sk-client",
            "cookie": "a=b",
            "x-goog-api-key": "g",
            "connection": "keep-alive, x-private-hop",
            "x-private-hop": "1",
            "keep-alive": "timeout=5",
            "proxy-authorization": "Basic x",
            "te": "trailers",
            "transfer-encoding": "chunked",
            "upgrade": "h2c",
            "host": "gateway:8080",
            "content-length": "12",
            "accept-encoding": "gzip, br",
            "anthropic-version": "2023-06-01",
        }
    )
    out = forward_request_headers(incoming)
    assert dict(out) == {"anthropic-version": "2023-06-01", "accept-encoding": "identity"}


def test_request_repeated_header_keeps_every_value_in_order() -> None:
    incoming: CIMultiDict[str] = CIMultiDict()
    incoming.add("anthropic-beta", "a-1")
    incoming.add("anthropic-beta", "b-2")
    assert forward_request_headers(incoming).getall("anthropic-beta") == ["a-1", "b-2"]


def test_response_keeps_request_id_ratelimit_and_retry_after() -> None:
    upstream = CIMultiDict(
        {
            "request-id": "req_011CX",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:00Z",
            "retry-after": "7",
            "content-type": "text/event-stream; charset=utf-8",
            "x-amzn-requestid": "abc",
            "cache-control": "no-cache",
        }
    )
    assert dict(forward_response_headers(upstream)) == dict(upstream)


def test_response_drops_hop_by_hop_and_server_owned_headers() -> None:
    upstream = CIMultiDict(
        {
            "transfer-encoding": "chunked",
            "connection": "close",
            "keep-alive": "timeout=5",
            "server": "cloudflare",
            "date": "Thu, 01 Jan 2026 00:00:00 GMT",
            "set-cookie": "__cf_bm=x",
            "content-length": "10",
            "request-id": "req_1",
        }
    )
    assert dict(forward_response_headers(upstream)) == {"request-id": "req_1"}
    kept = forward_response_headers(upstream, keep_length=True)
    assert dict(kept) == {"content-length": "10", "request-id": "req_1"}


# --- through a running gateway -------------------------------------------------------------


async def test_headers_cross_the_gateway_as_the_rules_say(
    aiohttp_client: AiohttpClient,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMGW_TEST_UPSTREAM_KEY", "sk-upstream-provider")
    fake_anthropic.api_key = "sk-upstream-provider"  # the fake refuses anything else
    upstream_headers = {
        "anthropic-ratelimit-requests-remaining": "41",
        "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:00Z",
        "retry-after": "3",
    }
    fake_anthropic.queue(Reply(headers=upstream_headers))
    provider = ProviderConfig(
        name="anthropic",
        kind="anthropic",
        base_url=str(fake_anthropic.url),
        api_key_env="LLMGW_TEST_UPSTREAM_KEY",
    )
    contexts: list[RequestContext] = []
    cfg = gateway_config(str(fake_anthropic.url), providers=(provider,))
    client = await aiohttp_client(make_app(cfg, middlewares=(live_contexts(contexts),)))

    resp = await client.post(
        "/v1/messages?beta=true",
        json={"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": [], "stream": True},
        headers={
            "anthropic-version": "2023-06-01",
            "anthropic-beta": BETAS,
            "anthropic-foo": "Bar, Baz",
            "x-api-key": "sk-client-secret",
            "Authorization": "Bearer tok-client-secret",
            "Connection": "keep-alive, x-private-hop",
            "x-private-hop": "1",
            "Keep-Alive": "timeout=5",
            "x-claude-code-session-id": "6fa6a676-3c38-43e4-870e-a5b4a1999e83",
            "x-claude-code-agent-id": "agent-7",
            "x-claude-code-parent-agent-id": "agent-1",
        },
    )
    await resp.read()

    assert resp.status == 200
    (sent,) = fake_anthropic.requests
    assert sent.path_qs == "/v1/messages?beta=true"
    assert sent.headers.getall("anthropic-beta") == [BETAS]
    assert sent.headers["anthropic-foo"] == "Bar, Baz"
    assert sent.headers["x-api-key"] == "sk-upstream-provider"
    assert "authorization" not in sent.headers
    assert "client-secret" not in repr(sent.raw_headers)
    assert "x-private-hop" not in sent.headers
    assert "keep-alive" not in sent.headers
    assert sent.headers.get("accept-encoding") == "identity"
    for name, value in upstream_headers.items():
        assert resp.headers[name] == value
    assert resp.headers["request-id"].startswith("req_011C")
    (ctx,) = contexts
    assert ctx.session_id == "6fa6a676-3c38-43e4-870e-a5b4a1999e83"
    assert ctx.agent_id == "agent-7"
    assert ctx.parent_agent_id == "agent-1"


async def test_query_string_travels_byte_for_byte(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway()
    raw = "/v1/messages?beta=true&x=%2F%3A&y=a+b"
    resp = await client.post(
        URL(raw, encoded=True),
        json={"model": "m", "max_tokens": 1, "messages": []},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert resp.status == 200
    assert fake_anthropic.requests[0].path_qs == raw


async def test_a_cookie_an_upstream_sets_never_rides_on_a_later_request(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    # One upstream session serves every client: a jar would hand one client's cookie to
    # the next. By host name, since aiohttp's default jar ignores cookies of IP addresses.
    by_name = str(fake_anthropic.url.with_host("localhost"))
    client = await gateway(gateway_config(by_name))
    fake_anthropic.queue(Reply(headers={"set-cookie": "__cf_bm=tenant-a; Path=/"}), Reply())
    for _ in range(2):
        resp = await client.post(
            "/v1/messages",
            json={"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": []},
            headers={"anthropic-version": "2023-06-01"},
        )
        assert resp.status == 200
        await resp.read()
    first, second = fake_anthropic.requests
    assert first.headers["host"].startswith("localhost:")
    assert "cookie" not in second.headers


async def test_header_names_the_gateway_adds_are_shared_not_copied_per_request() -> None:
    """A plain-``str`` name costs each request's headers an ``istr`` copy, held (by the
    upstream call's request info, or by the response) for as long as the stream lasts."""
    headers = forward_request_headers(CIMultiDict({"x-stainless-lang": "js"}))
    call = UpstreamCall(
        operation=Operation.MESSAGES, stream=True, model="m", body=b"{}", headers=headers
    )
    sent = (await AnthropicProvider(api_key="sk-test").build(call)).headers

    shared = (ACCEPT_ENCODING, ANTHROPIC_VERSION, CONTENT_TYPE, X_API_KEY)
    added = [name for name in sent if name != "x-stainless-lang"]
    assert sorted(added) == sorted(shared)
    assert all(any(name is constant for constant in shared) for name in added)
