"""The Anthropic API (or anything that speaks it, such as another gateway) as upstream."""

from __future__ import annotations

from dataclasses import dataclass

from ..headers import ANTHROPIC_VERSION, AUTHORIZATION, CONTENT_TYPE, X_API_KEY
from ..typedefs import ApiFormat, Operation
from .base import UpstreamCall, UpstreamRequest, upstream_url

__all__ = ("AnthropicProvider",)

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"

_PATHS = {Operation.MESSAGES: "v1/messages", Operation.COUNT_TOKENS: "v1/messages/count_tokens"}


@dataclass(frozen=True, slots=True, kw_only=True)
class AnthropicProvider:
    """Sends Messages API calls to ``base_url`` with the gateway's own key.

    ``api_key`` goes out as ``x-api-key``; ``auth_token`` as ``Authorization: Bearer``
    (for an upstream gateway). With neither, no credential is added (the demo upstream).
    """

    name: str = "anthropic"
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = None
    auth_token: str | None = None

    @property
    def format(self) -> ApiFormat:
        return ApiFormat.ANTHROPIC

    def __repr__(self) -> str:
        # Never let a key reach a log line through a repr.
        return f"AnthropicProvider(name={self.name!r}, base_url={self.base_url!r})"

    async def build(self, call: UpstreamCall) -> UpstreamRequest:
        # The client's query string travels as it came (``?beta=true``).
        raw = self.base_url.rstrip("/") + "/" + _PATHS[call.operation]
        url = upstream_url(raw + "?" + call.query if call.query else raw)
        headers = call.headers  # built for this call: added to, not copied
        headers.setdefault(ANTHROPIC_VERSION, DEFAULT_VERSION)
        headers[CONTENT_TYPE] = "application/json"
        if self.api_key:
            headers[X_API_KEY] = self.api_key
        elif self.auth_token:
            headers[AUTHORIZATION] = f"Bearer {self.auth_token}"
        return UpstreamRequest(method="POST", url=url, headers=headers, body=call.body)
