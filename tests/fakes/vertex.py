"""A Vertex AI ``publishers/anthropic`` upstream speaking the real wire format.

It checks the bearer token (401 in Google's array-wrapped envelope otherwise), the path
shape and the body rules (no ``model`` except for count-tokens, ``anthropic_version`` set),
and answers like Vertex: Anthropic JSON or SSE (with a ping), ids ``msg_vrtx_…``, and the
model's own id as ``model`` (not the version name the client used).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpServer
from yarl import URL

from llmgw.demo import estimate_tokens, message_events, message_json, new_id
from tests.fakes.anthropic import FakeAnthropic, Recorded, Reply
from tests.fakes.strict import VERTEX_ACCEPTED_BETAS, strict_violation

__all__ = ("TEST_TOKEN", "FakeVertex")

TEST_TOKEN = "ya29.llmgw-test-access-token"
REPORTED_MODEL = "claude-sonnet-4-5-20250929"
_PATH = re.compile(
    r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/anthropic/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)"
)


def _google_error(status: int, google_status: str, message: str) -> web.Response:
    body = [{"error": {"code": status, "message": message, "status": google_status}}]
    return web.json_response(body, status=status, content_type="application/json")


class FakeVertex(FakeAnthropic):
    """Vertex on top of the Anthropic fake's reply scripting and streaming machinery."""

    def __init__(
        self,
        *replies: Reply,
        token: str = TEST_TOKEN,
        project: str = "llmgw-test-project",
        region: str = "us-east5",
        reported_model: str = REPORTED_MODEL,
        strict: bool = False,
        accepted_betas: frozenset[str] = VERTEX_ACCEPTED_BETAS,
    ) -> None:
        super().__init__(*replies)
        #: Validate the ``anthropic-beta`` header and body fields (Anthropic-envelope 400s).
        self.strict = strict
        self.accepted_betas = accepted_betas
        self.rejections: list[str] = []
        self.token = token
        self.project = project
        self.region = region
        self.reported_model = reported_model
        self.model_ids: list[str] = []

    async def start(self, aiohttp_server: AiohttpServer) -> URL:
        """Serve on loopback; returns the base URL **with** ``/v1``, like Vertex's own."""
        self.url = (await super().start(aiohttp_server)) / "v1"
        return self.url

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = Recorded(
            method=request.method,
            path_qs=request.raw_path,
            headers=CIMultiDict(request.headers),
            raw_headers=tuple(request.raw_headers),
            body=await request.read(),
        )
        self.requests.append(recorded)
        if recorded.headers.get("authorization") != f"Bearer {self.token}":
            return _google_error(401, "UNAUTHENTICATED", "Request had invalid credentials.")
        match = _PATH.fullmatch(recorded.path)
        if match is None or request.method != "POST":
            return _google_error(404, "NOT_FOUND", f"{request.method} {recorded.path}")
        if (match["project"], match["location"]) != (self.project, self.region):
            return _google_error(403, "PERMISSION_DENIED", "project or location not enabled")
        self.model_ids.append(match["model"])
        reply = self._next_reply(recorded)
        headers = {"request-id": new_id("req_vrtx_"), **reply.headers}
        if reply.status != 200 or reply.body is not None:
            return web.json_response(reply.body, status=reply.status, headers=headers)
        try:
            body: dict[str, Any] = json.loads(recorded.body)
        except ValueError:
            return _google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(body.get("anthropic_version"), str):
            return _google_error(400, "INVALID_ARGUMENT", "anthropic_version is required")
        if match["model"] == "count-tokens":
            if not isinstance(body.get("model"), str):
                return _google_error(400, "INVALID_ARGUMENT", "model is required")
            return web.json_response({"input_tokens": estimate_tokens(body)}, headers=headers)
        if "model" in body:
            return _google_error(400, "INVALID_ARGUMENT", "model: Extra inputs are not permitted")
        if self.strict:
            betas = [
                b.strip()
                for value in recorded.headers.getall("anthropic-beta", ())
                for b in value.split(",")
                if b.strip()
            ]
            refused = strict_violation(body, betas, self.accepted_betas)
            if refused is not None:
                self.rejections.append(refused)
                # Model-level validation comes back in the Anthropic envelope.
                error = {"type": "invalid_request_error", "message": refused}
                return web.json_response({"type": "error", "error": error}, status=400)
        content: dict[str, Any] = {
            "model": reply.model or self.reported_model,
            "text": reply.text,
            "thinking": reply.thinking,
            "tool_use": reply.tool_use,
            "usage": reply.usage,
            "message_id": new_id("msg_vrtx_01"),
        }
        if match["method"] == "rawPredict":
            return web.json_response(message_json(**content), headers=headers)
        if match["method"] != "streamRawPredict" or body.get("stream") is not True:
            return _google_error(400, "INVALID_ARGUMENT", "streamRawPredict needs stream: true")
        events = reply.events if reply.events is not None else message_events(**content)
        return await self._stream(request, reply, events, headers)
