"""A Bedrock runtime upstream speaking the real wire format, with real SigV4 verification.

Requests are checked as AWS would: the SigV4 signature is recomputed with botocore and a
known test secret (or a Bedrock API key is compared), the body must have no ``model`` and no
``stream``. Streams are ``application/vnd.amazon.eventstream`` frames carrying base64 Anthropic
events with padding, no pings, and ``amazon-bedrock-invocationMetrics`` on ``message_stop``.
Replies are scripted with the same :class:`~tests.fakes.anthropic.Reply` as the Anthropic fake.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import re
import secrets
from collections import deque
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpServer
from yarl import URL

from llmgw.demo import estimate_tokens, message_events, message_json, new_id
from llmgw.wire import encode_bedrock_chunk, encode_bedrock_exception
from tests.fakes.anthropic import Recorded, Reply
from tests.fakes.strict import BEDROCK_ACCEPTED_BETAS, strict_violation

__all__ = (
    "REPORTED_MODEL",
    "TEST_ACCESS_KEY",
    "TEST_SECRET_KEY",
    "FakeBedrock",
    "gateway_credentials",
    "verify_sigv4",
)

TEST_ACCESS_KEY = "AKIDLLMGWGATEWAYTEST"
TEST_SECRET_KEY = "llmgw/test/secret/key/0123456789abcdefABCDEF"
#: What real Bedrock reports as ``model``: the base id, not the profile the client named.
REPORTED_MODEL = "claude-sonnet-4-5-20250929"

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?"
    r"Signature=(?P<sig>[0-9a-f]{64})"
)


def verify_sigv4(
    recorded: Recorded, *, access_key: str, secret_key: str, region: str, host: str
) -> str | None:
    """``None`` when the request carries a valid SigV4 signature for ``bedrock``, else why not."""
    header = recorded.headers.get("authorization", "")
    match = _AUTH.fullmatch(header)
    if match is None:
        return "no SigV4 Authorization header"
    if match["akid"] != access_key:
        return f"unknown access key {match['akid']}"
    if match["service"] != "bedrock" or match["region"] != region:
        return f"wrong scope {match['region']}/{match['service']}"
    amz_date = recorded.headers.get("x-amz-date", "")
    if not amz_date.startswith(match["date"]):
        return "x-amz-date does not match the credential scope"
    signed = match["signed"].split(";")
    request = AWSRequest(method=recorded.method, url=f"http://{host}{recorded.path_qs}")
    request.data = recorded.body
    for name in signed:
        values = recorded.headers.getall(name, [])
        if not values:
            return f"signed header {name} is missing"
        for value in values:
            request.headers[name] = value
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret_key), "bedrock", region)
    if signer.signed_headers(signer.headers_to_sign(request)) != match["signed"]:
        return "SignedHeaders is not the canonical list"
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["sig"]):
        return "signature mismatch"
    return None


def _error(status: int, exception: str, message: str) -> web.Response:
    return web.json_response(
        {"message": message}, status=status, headers={"x-amzn-ErrorType": exception}
    )


class FakeBedrock:
    """Answers ``/model/{id}/invoke``, ``…/invoke-with-response-stream``, ``…/count-tokens``."""

    def __init__(
        self,
        *replies: Reply,
        region: str = "us-east-1",
        access_key: str = TEST_ACCESS_KEY,
        secret_key: str = TEST_SECRET_KEY,
        bearer_token: str | None = None,
        reported_model: str = REPORTED_MODEL,
        strict: bool = False,
        accepted_betas: frozenset[str] = BEDROCK_ACCEPTED_BETAS,
    ) -> None:
        self.replies: deque[Reply] = deque(replies)
        #: Validate betas and body fields as real Bedrock does (400 ``invalid beta flag``...).
        self.strict = strict
        self.accepted_betas = accepted_betas
        #: The 400 messages strict mode answered with.
        self.rejections: list[str] = []
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self.bearer_token = bearer_token
        self.reported_model = reported_model
        self.requests: list[Recorded] = []
        self.model_ids: list[str] = []
        self.auth_failures: list[str] = []
        #: The exact body bytes of each stream sent (whole frames, in order).
        self.streamed: list[bytes] = []
        self.url = URL()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def start(self, aiohttp_server: AiohttpServer) -> URL:
        server = await aiohttp_server(self.app)
        self.url = server.make_url("")
        return self.url

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def _authorized(self, recorded: Recorded, host: str) -> str | None:
        header = recorded.headers.get("authorization", "")
        if self.bearer_token is not None and header.startswith("Bearer "):
            ok = hmac.compare_digest(header.removeprefix("Bearer "), self.bearer_token)
            return None if ok else "wrong Bedrock API key"
        return verify_sigv4(
            recorded,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            host=host,
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = Recorded(
            method=request.method,
            path_qs=request.raw_path,
            headers=CIMultiDict(request.headers),
            raw_headers=tuple(request.raw_headers),
            body=await request.read(),
        )
        self.requests.append(recorded)
        refused = self._authorized(recorded, request.headers.get("host", ""))
        if refused is not None:
            self.auth_failures.append(refused)
            return _error(403, "InvalidSignatureException", refused)
        path = recorded.path
        if request.method != "POST" or not path.startswith("/model/"):
            return _error(404, "UnknownOperationException", f"{request.method} {path}")
        raw_id, _, action = path.removeprefix("/model/").rpartition("/")
        self.model_ids.append(unquote(raw_id))
        reply = self.replies.popleft() if self.replies else Reply()
        if reply.first_byte_delay:
            await asyncio.sleep(reply.first_byte_delay)
        if reply.status != 200 or reply.body is not None:
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        try:
            body = json.loads(recorded.body)
        except ValueError:
            return _error(400, "ValidationException", "Malformed input request")
        if action == "count-tokens":
            return self._count(body)
        for key in ("model", "stream"):
            if key in body:
                return _error(
                    400, "ValidationException", f"extraneous key [{key}] is not permitted"
                )
        if not isinstance(body.get("anthropic_version"), str):
            return _error(400, "ValidationException", "required key [anthropic_version] not found")
        beta = body.get("anthropic_beta")
        if beta is not None and not isinstance(beta, list):
            return _error(400, "ValidationException", "anthropic_beta: expected type: JSONArray")
        if self.strict:
            refused = strict_violation(body, beta or [], self.accepted_betas)
            if refused is not None:
                self.rejections.append(refused)
                return _error(400, "ValidationException", refused)
        content: dict[str, Any] = {
            "model": reply.model or self.reported_model,
            "text": reply.text,
            "thinking": reply.thinking,
            "tool_use": reply.tool_use,
            "usage": reply.usage,
            "message_id": new_id("msg_bdrk_01"),
        }
        usage = reply.usage
        headers = {
            "x-amzn-RequestId": secrets.token_hex(16),
            "X-Amzn-Bedrock-Input-Token-Count": str(usage.input_tokens),
            "X-Amzn-Bedrock-Output-Token-Count": str(usage.output_tokens),
            "X-Amzn-Bedrock-Cache-Read-Input-Token-Count": str(usage.cache_read),
            "X-Amzn-Bedrock-Cache-Write-Input-Token-Count": str(usage.cache_creation),
            **reply.headers,
        }
        if action == "invoke":
            return web.json_response(message_json(**content), headers=headers)
        if action == "invoke-with-response-stream":
            return await self._stream(request, reply, content, headers)
        return _error(404, "UnknownOperationException", f"unknown action {action}")

    def _count(self, body: dict[str, Any]) -> web.Response:
        try:
            inner = json.loads(base64.b64decode(body["input"]["invokeModel"]["body"]))
        except (KeyError, TypeError, ValueError):
            return _error(400, "ValidationException", "input.invokeModel.body is required")
        return web.json_response({"inputTokens": estimate_tokens(inner)})

    async def _stream(
        self,
        request: web.Request,
        reply: Reply,
        content: dict[str, Any],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        events = [e for e in message_events(**content) if e[0] != "ping"]
        usage = reply.usage
        metrics = {
            "inputTokenCount": usage.input_tokens,
            "outputTokenCount": usage.output_tokens,
            "invocationLatency": 321,
            "firstByteLatency": 123,
            "cacheReadInputTokenCount": usage.cache_read,
            "cacheWriteInputTokenCount": usage.cache_creation,
        }
        frames = []
        for name, data in events:
            if name == "message_stop":
                data = {**data, "amazon-bedrock-invocationMetrics": metrics}
            raw = json.dumps(data, separators=(",", ":")).encode()
            frames.append(encode_bedrock_chunk(raw, padding="abcdefghij"[: secrets.randbelow(10)]))
        if reply.error_after is not None:
            message = str(reply.error_event.get("error", {}).get("message", "stream error"))
            frames = [
                *frames[: reply.error_after],
                encode_bedrock_exception("modelStreamErrorException", message),
            ]
        elif reply.drop_after is not None:
            frames = frames[: reply.drop_after]
        self.streamed.append(b"".join(frames))
        response = web.StreamResponse(headers=headers)
        response.content_type = "application/vnd.amazon.eventstream"
        response.headers["X-Amzn-Bedrock-Content-Type"] = "application/json"
        await response.prepare(request)
        for index, frame in enumerate(frames):
            if index and reply.delay:
                await asyncio.sleep(reply.delay)
            gate = reply.gates.get(index)
            if gate is not None:
                await gate.wait()
            await response.write(frame)
        if reply.drop_after is not None and reply.error_after is None:
            assert request.transport is not None
            request.transport.close()
            await asyncio.Event().wait()
        await response.write_eof()
        return response


def gateway_credentials() -> Credentials:
    """The gateway's own AWS identity in tests: the key the fake verifies signatures with."""
    return Credentials(TEST_ACCESS_KEY, TEST_SECRET_KEY)
