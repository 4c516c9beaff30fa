"""The Anthropic API (or anything that speaks it, such as another gateway) as upstream."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from yarl import URL

from ..typedefs import ApiFormat, Operation
from .base import UpstreamCall, UpstreamRequest

__all__ = ("AnthropicProvider",)

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"

_PATHS = {Operation.MESSAGES: "v1/messages", Operation.COUNT_TOKENS: "v1/messages/count_tokens"}


@functools.lru_cache(maxsize=256)
def _url(base_url: str, path: str, query: str) -> URL:
    """The upstream URL, parsed once per distinct query (few: ``""``, ``beta=true``).
    ``encoded=True``: the client's query string travels byte for byte."""
    raw = base_url.rstrip("/") + "/" + path
    return URL(raw + "?" + query if query else raw, encoded=True)


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
        url = _url(self.base_url, _PATHS[call.operation], call.query)
        headers = call.headers  # built for this call: added to, not copied
        headers.setdefault("anthropic-version", DEFAULT_VERSION)
        headers["content-type"] = "application/json"
        if self.api_key:
            headers["x-api-key"] = self.api_key
        elif self.auth_token:
            headers["authorization"] = f"Bearer {self.auth_token}"
        return UpstreamRequest(method="POST", url=url, headers=headers, body=call.body)
