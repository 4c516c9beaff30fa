"""A scriptable Anthropic API upstream: records every request and answers like the real API.

Serve it with pytest-aiohttp's `aiohttp_server` (its TestServer cancels a handler when the
client hangs up, which is how `client_disconnected` notices a closed stream while the fake is
waiting on a gate or a delay).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpServer
from yarl import URL

from llmgw.demo import (
    DemoUsage,
    error_body,
    estimate_tokens,
    message_events,
    message_json,
    model_list,
    new_id,
    sse_bytes,
)

__all__ = ("FakeAnthropic", "Recorded", "Reply")

Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Recorded:
    """One request exactly as it arrived."""

    method: str
    path_qs: str  # raw path and query string, as sent
    headers: CIMultiDict[str]
    raw_headers: tuple[tuple[bytes, bytes], ...]  # order and spelling as sent
    body: bytes

    @property
    def path(self) -> str:
        return self.path_qs.partition("?")[0]

    def json(self) -> Any:
        return json.loads(self.body)


def _overloaded() -> dict[str, Any]:
    return {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """How to answer one request. The defaults are a normal, successful answer.

    A reply with `status` other than 200 or with a `body` is sent as JSON on any path; otherwise
    the path decides (message, token count, model list). Streaming follows the request's `stream`.
    Stream events are numbered from 0 (`message_start`); `gates[i]` must be set before event i
    is sent, `delay` is slept before every event but the first.
    """

    text: str = "Hello from the fake upstream."
    thinking: str | None = None
    tool_use: tuple[str, dict[str, Any]] | None = None
    usage: DemoUsage = field(default_factory=DemoUsage)
    model: str | None = None  # None: echo the requested model string, as the CLI needs
    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    events: Sequence[Event] | None = None  # stream these instead of the built message
    chunks: Sequence[bytes] | None = None  # raw body writes, instead of one write per event
    error_after: int | None = None  # after N events send `error_event`, then end the stream
    error_event: Mapping[str, Any] = field(default_factory=_overloaded)
    drop_after: int | None = None  # after N events close the connection mid-body
    delay: float = 0.0
    first_byte_delay: float = 0.0  # before the status line
    gates: Mapping[int, asyncio.Event] = field(default_factory=dict)

    @classmethod
    def error(
        cls, status: int, error_type: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> Reply:
        return cls(status=status, body=error_body(error_type, message), headers=headers or {})

    @classmethod
    def overloaded(cls) -> Reply:
        return cls.error(529, "overloaded_error", "Overloaded")

    @classmethod
    def rate_limited(cls, *, retry_after: int = 1) -> Reply:
        headers = {"retry-after": str(retry_after)}
        return cls.error(429, "rate_limit_error", "Rate limited", headers=headers)


class FakeAnthropic:
    """Answers each request with the next queued `Reply`, else `responder(request)`, else a
    default `Reply()`. Normal answers check `anthropic-version` and, when `api_key` is set, the
    credential (`x-api-key` or `Authorization: Bearer`), as the real API does."""

    def __init__(
        self,
        *replies: Reply,
        responder: Callable[[Recorded], Reply] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.replies: deque[Reply] = deque(replies)
        self.responder = responder
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.open_streams = 0
        self.completed_streams = 0
        self.client_disconnects = 0
        self.client_disconnected = asyncio.Event()
        self.url = URL()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def start(self, aiohttp_server: AiohttpServer) -> URL:
        """Serve on a loopback port; returns the base URL (no trailing slash)."""
        server = await aiohttp_server(self.app)
        self.url = server.make_url("")
        return self.url

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def _next_reply(self, recorded: Recorded) -> Reply:
        if self.replies:
            return self.replies.popleft()
        if self.responder is not None:
            return self.responder(recorded)
        return Reply()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = Recorded(
            method=request.method,
            path_qs=request.raw_path,
            headers=CIMultiDict(request.headers),
            raw_headers=tuple(request.raw_headers),
            body=await request.read(),
        )
        self.requests.append(recorded)
        reply = self._next_reply(recorded)
        if reply.first_byte_delay:
            await asyncio.sleep(reply.first_byte_delay)
        headers = {"request-id": new_id("req_011C"), **reply.headers}
        if reply.status != 200 or reply.body is not None:
            return web.json_response(reply.body, status=reply.status, headers=headers)
        refused = self._refuse(recorded)
        if refused is not None:
            return web.json_response(refused[1], status=refused[0], headers=headers)
        body = _json_object(recorded.body)
        method, path = recorded.method, recorded.path
        if method == "POST" and path.endswith("/v1/messages/count_tokens"):
            return web.json_response({"input_tokens": estimate_tokens(body)}, headers=headers)
        if method == "GET" and path.endswith("/v1/models"):
            limit = request.query.get("limit", "20")
            page = model_list(
                limit=int(limit) if limit.isdigit() else 20,
                after_id=request.query.get("after_id"),
            )
            return web.json_response(page, headers=headers)
        if method == "POST" and path.endswith("/v1/messages"):
            return await self._message(request, body, reply, headers)
        message = f"{method} {path} is not a known endpoint"
        return web.json_response(error_body("not_found_error", message), status=404)

    async def _message(
        self, request: web.Request, body: dict[str, Any], reply: Reply, headers: dict[str, str]
    ) -> web.StreamResponse:
        if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
            message = "model: Field required; messages: Field required"
            return web.json_response(error_body("invalid_request_error", message), status=400)
        content: dict[str, Any] = {
            "model": reply.model or body["model"],
            "text": reply.text,
            "thinking": reply.thinking,
            "tool_use": reply.tool_use,
            "usage": reply.usage,
        }
        if not body.get("stream"):
            return web.json_response(message_json(**content), headers=headers)
        events = reply.events if reply.events is not None else message_events(**content)
        return await self._stream(request, reply, events, headers)

    def _client_closed(self) -> None:
        self.client_disconnects += 1
        self.client_disconnected.set()

    def _refuse(self, recorded: Recorded) -> tuple[int, dict[str, Any]] | None:
        if "anthropic-version" not in recorded.headers:
            message = "anthropic-version: header is required"
            return 400, error_body("invalid_request_error", message)
        if self.api_key is None:
            return None
        offered = {
            recorded.headers.get("x-api-key"),
            recorded.headers.get("authorization", "").removeprefix("Bearer "),
        }
        if self.api_key in offered:
            return None
        return 401, error_body("authentication_error", "invalid x-api-key")

    async def _stream(
        self,
        request: web.Request,
        reply: Reply,
        events: Sequence[Event],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        chunks = (
            list(reply.chunks) if reply.chunks is not None else [sse_bytes([e]) for e in events]
        )
        if reply.error_after is not None:
            error = ("error", dict(reply.error_event))
            chunks = [*chunks[: reply.error_after], sse_bytes([error])]
        elif reply.drop_after is not None:
            chunks = chunks[: reply.drop_after]
        response = web.StreamResponse(headers=headers)
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        response.headers["Cache-Control"] = "no-cache"
        self.open_streams += 1
        dropped = False
        try:
            await response.prepare(request)
            for index, chunk in enumerate(chunks):
                if index and reply.delay:
                    await asyncio.sleep(reply.delay)
                gate = reply.gates.get(index)
                if gate is not None:
                    await gate.wait()
                await response.write(chunk)
            if reply.drop_after is not None and reply.error_after is None:
                assert request.transport is not None
                dropped = True
                request.transport.close()  # ends the body without the terminating chunk
                await asyncio.Event().wait()  # until aiohttp cancels us on connection_lost
            await response.write_eof()
            self.completed_streams += 1
        except asyncio.CancelledError:
            if not dropped:
                self._client_closed()
            raise
        except ConnectionResetError:
            self._client_closed()
        finally:
            self.open_streams -= 1
        return response


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
