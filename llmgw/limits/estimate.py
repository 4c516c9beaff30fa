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

from ..pricing import ModelPrice, PriceTable

__all__ = ("IMAGE_TOKEN_BOUND", "Estimate", "WorstCase", "estimate_request", "input_token_bound")

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
    worst_case: WorstCase | None = None,
) -> Estimate:
    """The worst case over every model the request may be sent to (``worst_case``: the
    same prices, looked up once per model)."""
    input_tokens = input_token_bound(body, raw, bytes_per_token=bytes_per_token, images=images)
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        max_tokens = DEFAULT_MAX_TOKENS
    price = worst_case.micros if worst_case is not None else prices.worst_case_micros
    micros = 0
    for m in models:
        cost = price(m, input_tokens, max_tokens)
        if cost > micros:
            micros = cost
    return Estimate(input_tokens=input_tokens, max_tokens=max_tokens, micros=micros)


#: Integer rates (micro-dollars per 10^6 tokens): input at its dearest, output.
_Rates = tuple[int, int]
_MAX_MODELS = 1024


class WorstCase:
    """:meth:`PriceTable.worst_case_micros` with each model's rates resolved once and the
    arithmetic in integers (the table's Decimal math and model-name parsing cost more
    than the rest of a reservation)."""

    __slots__ = ("_models", "prices")

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        #: model -> (rates, long-context threshold, long-context rates); ``None`` when a
        #: price is not a whole number of micro-dollars per 10^6 tokens (then the table
        #: answers).
        self._models: dict[str, tuple[_Rates, int, _Rates | None] | None] = {}

    def micros(self, model: str, input_tokens: int, max_tokens: int) -> int:
        try:
            entry = self._models[model]
        except KeyError:
            entry = self._resolve(model)
        if entry is None:
            return self.prices.worst_case_micros(model, input_tokens, max_tokens)
        rates, threshold, long_rates = entry
        if long_rates is not None and input_tokens > threshold:
            rates = long_rates
        # Half-up rounding to the micro-dollar, as the table rounds.
        return (input_tokens * rates[0] + max_tokens * rates[1] + 500_000) // 1_000_000

    def _resolve(self, model: str) -> tuple[_Rates, int, _Rates | None] | None:
        if len(self._models) >= _MAX_MODELS:
            self._models.clear()
        price = self.prices.price(model)
        entry: tuple[_Rates, int, _Rates | None] | None
        if price is None:
            entry = ((0, 0), 0, None)
        else:
            rates = _rates(price)
            long_rates = _rates(price.long_context) if price.long_context is not None else None
            if rates is None or (price.long_context is not None and long_rates is None):
                entry = None
            else:
                entry = (rates, price.long_context_threshold, long_rates)
        self._models[model] = entry
        return entry


def _rates(price: ModelPrice) -> _Rates | None:
    dearest = max(price.input, price.cache_write_1h) * 1_000_000
    output = price.output * 1_000_000
    if dearest != int(dearest) or output != int(output):
        return None
    return int(dearest), int(output)


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
