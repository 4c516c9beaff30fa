"""Usage of a non-streaming Bedrock InvokeModel answer: the JSON body's ``usage``, and the
``X-Amzn-Bedrock-*-Token-Count`` headers (what AWS bills) over it when Bedrock sent them."""

from __future__ import annotations

from multidict import MultiMapping

from .usage import JSONUsageTap, Usage

__all__ = ("BedrockJSONUsageTap", "apply_bedrock_headers")

_HEADERS = (
    ("x-amzn-bedrock-input-token-count", "input_tokens"),
    ("x-amzn-bedrock-output-token-count", "output_tokens"),
    ("x-amzn-bedrock-cache-read-input-token-count", "cache_read_input_tokens"),
    ("x-amzn-bedrock-cache-write-input-token-count", "cache_creation_input_tokens"),
)


def apply_bedrock_headers(usage: Usage, headers: MultiMapping[str]) -> None:
    """``X-Amzn-Bedrock-*-Token-Count`` headers of an InvokeModel response, when present."""
    reported: dict[str, int] = {}
    for header, ours in _HEADERS:
        value = headers.get(header)
        if value is not None and value.strip().isdigit():
            reported[ours] = int(value)
    if reported:
        usage.update(reported)
        usage.final = True


class BedrockJSONUsageTap(JSONUsageTap):
    """InvokeModel JSON usage, overridden by the token-count headers when Bedrock sent them."""

    __slots__ = ("_headers",)

    def __init__(
        self,
        headers: MultiMapping[str] | None,
        *,
        limit: int = 64 << 20,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(limit=limit, usage=usage)
        self._headers = headers

    def close(self) -> None:
        super().close()
        if self._headers is not None:
            apply_bedrock_headers(self.usage, self._headers)
