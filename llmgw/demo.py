"""A tiny Anthropic Messages API upstream, so `llmgw serve` works before any key is configured.

It is also the one place that knows how the real API shapes a message and its event stream;
the test fakes build their replies with the same functions, so the demo and the tests agree.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = (
    "DEMO_MODELS",
    "DemoUsage",
    "demo_app",
    "error_body",
    "estimate_tokens",
    "last_user_text",
    "message_events",
    "message_json",
    "model_list",
    "new_id",
    "sse_bytes",
)

Event = tuple[str, dict[str, Any]]

DEMO_MODELS: tuple[tuple[str, str, str], ...] = (
    ("claude-opus-4-8", "Claude Opus 4.8", "2026-08-05T00:00:00Z"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
)

_ALPHABET = string.ascii_letters + string.digits
_DELAY_KEY = web.AppKey("llmgw.demo.delay", float)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoUsage:
    """Token counts as the API reports them: `input_tokens` excludes both cache counts."""

    input_tokens: int = 12
    output_tokens: int = 8
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    cache_read: int = 0

    @property
    def cache_creation(self) -> int:
        return self.cache_creation_5m + self.cache_creation_1h


def new_id(prefix: str) -> str:
    """`msg_01…`, `toolu_01…`, `req_011C…`: the API's id style (prefix + base62)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(22))


def _usage_json(usage: DemoUsage, *, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_creation_5m,
            "ephemeral_1h_input_tokens": usage.cache_creation_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _signature() -> str:
    return "Eq" + secrets.token_urlsafe(48).replace("-", "+").replace("_", "/")


def _text_pieces(text: str) -> list[str]:
    """Split like the API does: a few words per delta, whitespace kept."""
    words = re.findall(r"\s*\S+\s*", text) or [text]
    return ["".join(words[i : i + 3]) for i in range(0, len(words), 3)]


def _json_pieces(value: dict[str, Any]) -> list[str]:
    """`input_json_delta` pieces: the first is empty, as the API often sends it."""
    raw = json.dumps(value, separators=(",", ":"))
    cut = len(raw) // 2
    return ["", raw[:cut], raw[cut:]] if raw != "{}" else ["", raw]


def _block(index: int, start: dict[str, Any], deltas: list[dict[str, Any]]) -> list[Event]:
    opened = {"type": "content_block_start", "index": index, "content_block": start}
    events: list[Event] = [("content_block_start", opened)]
    for delta in deltas:
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def message_events(
    *,
    model: str,
    text: str = "Hello from the llmgw demo upstream.",
    thinking: str | None = None,
    tool_use: tuple[str, dict[str, Any]] | None = None,
    usage: DemoUsage = DemoUsage(),
    message_id: str | None = None,
) -> list[Event]:
    """The event sequence of one streamed message, in the order and shapes the API sends."""
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if thinking is not None:
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _text_pieces(thinking)]
        deltas.append({"type": "signature_delta", "signature": _signature()})
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
    if text:
        deltas = [{"type": "text_delta", "text": p} for p in _text_pieces(text)]
        blocks.append(({"type": "text", "text": ""}, deltas))
    if tool_use is not None:
        name, tool_input = tool_use
        start = {"type": "tool_use", "id": new_id("toolu_01"), "name": name, "input": {}}
        pieces = _json_pieces(tool_input)
        blocks.append((start, [{"type": "input_json_delta", "partial_json": p} for p in pieces]))

    message: dict[str, Any] = {
        "id": message_id or new_id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage_json(usage, output_tokens=1),
    }
    events: list[Event] = [("message_start", {"type": "message_start", "message": message})]
    for index, (start, deltas) in enumerate(blocks):
        events += _block(index, start, deltas)
    # The API sends its one ping right after the first block opens.
    events.insert(2 if blocks else 1, ("ping", {"type": "ping"}))
    # message_delta usage is cumulative and repeats the input and cache counts.
    final_usage = _usage_json(usage, output_tokens=usage.output_tokens)
    del final_usage["cache_creation"], final_usage["service_tier"]
    stop = {"stop_reason": "tool_use" if tool_use else "end_turn", "stop_sequence": None}
    events.append(("message_delta", {"type": "message_delta", "delta": stop, "usage": final_usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def message_json(
    *,
    model: str,
    text: str = "Hello from the llmgw demo upstream.",
    thinking: str | None = None,
    tool_use: tuple[str, dict[str, Any]] | None = None,
    usage: DemoUsage = DemoUsage(),
    message_id: str | None = None,
) -> dict[str, Any]:
    """The same message as one non-streaming Message object."""
    content: list[dict[str, Any]] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking, "signature": _signature()})
    if text:
        content.append({"type": "text", "text": text})
    if tool_use is not None:
        name, tool_input = tool_use
        content.append(
            {"type": "tool_use", "id": new_id("toolu_01"), "name": name, "input": tool_input}
        )
    return {
        "id": message_id or new_id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool_use is not None else "end_turn",
        "stop_sequence": None,
        "usage": _usage_json(usage, output_tokens=usage.output_tokens),
    }


def sse_bytes(events: list[Event]) -> bytes:
    """Encode events as the API does: one `event:` and one compact `data:` line each."""
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
        for name, data in events
    )


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """The Anthropic error envelope."""
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": new_id("req_011C"),
    }


def estimate_tokens(body: dict[str, Any]) -> int:
    """≈ 4 characters per token over what the model reads; good enough for a demo."""
    parts = {k: body[k] for k in ("system", "messages", "tools") if k in body}
    return max(1, len(json.dumps(parts, separators=(",", ":"))) // 4)


def last_user_text(messages: Any) -> str:
    """The last text block of the last user turn (Claude Code puts its reminders before it)."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [
                b["text"]
                for b in content
                if isinstance(b, dict)
                and b.get("type") == "text"
                and isinstance(b.get("text"), str)
            ]
            if texts:
                return str(texts[-1])
    return ""


def _bad_request(message: str) -> web.Response:
    return web.json_response(error_body("invalid_request_error", message), status=400)


async def _read_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _messages(request: web.Request) -> web.StreamResponse:
    body = await _read_object(request)
    if body is None:
        return _bad_request("The request body is not a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not isinstance(body.get("messages"), list):
        return _bad_request("`model` (string) and `messages` (list) are required.")
    text = f"Hello from the llmgw demo upstream. You said: {last_user_text(body['messages'])[:60]}"
    usage = DemoUsage(input_tokens=estimate_tokens(body), output_tokens=max(1, len(text) // 4))
    headers = {"request-id": new_id("req_011C")}
    if not body.get("stream"):
        return web.json_response(message_json(model=model, text=text, usage=usage), headers=headers)
    response = web.StreamResponse(headers=headers)
    response.content_type = "text/event-stream"
    response.charset = "utf-8"
    response.headers["Cache-Control"] = "no-cache"
    await response.prepare(request)
    delay = request.app[_DELAY_KEY]
    for event in message_events(model=model, text=text, usage=usage):
        await response.write(sse_bytes([event]))
        if delay:
            await asyncio.sleep(delay)
    await response.write_eof()
    return response


async def _count_tokens(request: web.Request) -> web.Response:
    body = await _read_object(request)
    if body is None or not isinstance(body.get("messages"), list):
        return _bad_request("`messages` (list) is required.")
    return web.json_response({"input_tokens": estimate_tokens(body)})


def model_list(*, limit: int = 20, after_id: str | None = None) -> dict[str, Any]:
    """One page of `GET /v1/models`, paged by `after_id` like the API."""
    data = [
        {"type": "model", "id": i, "display_name": n, "created_at": c} for i, n, c in DEMO_MODELS
    ]
    ids = [m["id"] for m in data]
    if after_id in ids:
        data = data[ids.index(after_id) + 1 :]
    page = data[:limit]
    return {
        "data": page,
        "has_more": len(data) > limit,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


async def _models(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        return _bad_request("`limit` must be an integer.")
    if not 1 <= limit <= 1000:
        return _bad_request("`limit` must be between 1 and 1000.")
    return web.json_response(model_list(limit=limit, after_id=request.query.get("after_id")))


def demo_app(*, delay: float = 0.0) -> web.Application:
    """The demo upstream; `delay` paces stream events so streaming is visible in a terminal."""
    app = web.Application()
    app[_DELAY_KEY] = delay
    app.router.add_post("/v1/messages", _messages)
    app.router.add_post("/v1/messages/count_tokens", _count_tokens)
    app.router.add_get("/v1/models", _models)
    return app
