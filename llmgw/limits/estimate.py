"""The worst case a request can cost, bounded from its body before it is sent (pure).

Input tokens are bounded by the body's size: a token is at least one byte of the text it
encodes, so ``len(body)`` over-counts JSON syntax and escapes but never under-counts text.
Base64 images are the exception (megabytes for at most a few thousand tokens), so their
bytes are swapped for a per-image bound. Output is ``max_tokens`` (thinking included).
The dearest input class (a 1-hour cache write) is priced for every input token.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..pricing import PriceTable

__all__ = ("IMAGE_TOKEN_BOUND", "Estimate", "estimate_request", "input_token_bound")

#: Upper bound for one image: (width x height) / 750 at the largest size any model accepts.
IMAGE_TOKEN_BOUND = 4_800
#: Reserved when a body names no ``max_tokens`` (the upstream refuses it anyway).
DEFAULT_MAX_TOKENS = 64_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    input_tokens: int
    max_tokens: int
    micros: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.max_tokens


def input_token_bound(
    body: dict[str, Any], raw: bytes, *, bytes_per_token: float = 1.0, images: bool = True
) -> int:
    """Upper bound on input tokens (exact for text when ``bytes_per_token`` is 1).

    ``images=False`` skips the search for base64 images: a looser bound that costs O(1)
    instead of a scan of the body (the limiter tightens it only when it would refuse).
    """
    size = len(raw)
    count = 0
    if images and b'"base64"' in raw:
        for block in _image_blocks(body.get("messages")):
            source = block.get("source")
            data = source.get("data") if isinstance(source, dict) else None
            if isinstance(data, str):
                size -= len(data)
                count += 1
    return int(size / bytes_per_token) + 1 + count * IMAGE_TOKEN_BOUND


def estimate_request(
    body: dict[str, Any],
    raw: bytes,
    models: list[str],
    prices: PriceTable,
    *,
    bytes_per_token: float = 1.0,
    images: bool = True,
) -> Estimate:
    """The worst case over every model the request may be sent to."""
    input_tokens = input_token_bound(body, raw, bytes_per_token=bytes_per_token, images=images)
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        max_tokens = DEFAULT_MAX_TOKENS
    micros = max((prices.worst_case_micros(m, input_tokens, max_tokens) for m in models), default=0)
    return Estimate(input_tokens=input_tokens, max_tokens=max_tokens, micros=micros)


def _image_blocks(messages: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(messages, list):
        return
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            yield from _images_in(content)


def _images_in(blocks: list[Any]) -> Iterator[dict[str, Any]]:
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "image":
            yield block
        elif block.get("type") == "tool_result" and isinstance(block.get("content"), list):
            yield from _images_in(block["content"])
