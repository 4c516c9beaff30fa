"""Model prices and the cost of a usage record, in integer micro-dollars.

Prices are USD per million tokens as published by Anthropic (dated below), held as
``Decimal`` so every published price is exact; tokens times USD/MTok is micro-dollars, so a
cost is one exact sum rounded once, half up, to an integer.
Configuration can override or extend the bundled table (``[pricing."model-prefix"]``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from .usage import Usage

if TYPE_CHECKING:
    from .config import PriceOverride

__all__ = (
    "BUNDLED_PRICES",
    "PRICES_AS_OF",
    "ModelPrice",
    "PriceTable",
    "model_family",
    "price_table",
)

PRICES_AS_OF = "2026-11-01"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice:
    """USD per million tokens for each token class; ``long_context`` applies above the
    ``long_context_threshold`` of total input tokens (Sonnet's 1M-context tier)."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    long_context: ModelPrice | None = None
    long_context_threshold: int = 200_000

    @classmethod
    def of(cls, input: str, output: str, *, long_context: ModelPrice | None = None) -> ModelPrice:
        """Anthropic's standard multipliers: 5m write 1.25x, 1h write 2x, read 0.1x input."""
        base = Decimal(input)
        return cls(
            input=base,
            output=Decimal(output),
            cache_write_5m=base * Decimal("1.25"),
            cache_write_1h=base * 2,
            cache_read=base / 10,
            long_context=long_context,
        )

    @classmethod
    def from_override(cls, override: PriceOverride) -> ModelPrice:
        """A ``[pricing."prefix"]`` entry; unset cache prices follow the standard multipliers."""
        long_context = None
        if override.long_context_input is not None and override.long_context_output is not None:
            long_context = cls.of(override.long_context_input, override.long_context_output)
        base = cls.of(override.input, override.output, long_context=long_context)
        return cls(
            input=base.input,
            output=base.output,
            cache_write_5m=_dec(override.cache_write_5m, base.cache_write_5m),
            cache_write_1h=_dec(override.cache_write_1h, base.cache_write_1h),
            cache_read=_dec(override.cache_read, base.cache_read),
            long_context=long_context,
            long_context_threshold=override.long_context_threshold,
        )


def _dec(value: str | None, default: Decimal) -> Decimal:
    return Decimal(value) if value is not None else default


def price_table(overrides: Iterable[PriceOverride] = ()) -> PriceTable:
    """The bundled table with the configuration's ``[pricing."prefix"]`` entries on top."""
    return PriceTable({o.prefix: ModelPrice.from_override(o) for o in overrides})


_SONNET_LONG = ModelPrice.of("6", "22.50")

#: Family prefix → price. Longest matching prefix wins (``claude-opus-4-1`` before
#: ``claude-opus-4``).
BUNDLED_PRICES: Mapping[str, ModelPrice] = {
    "claude-opus-4-8": ModelPrice.of("5", "25"),
    "claude-opus-4-7": ModelPrice.of("5", "25"),
    "claude-opus-4-6": ModelPrice.of("5", "25"),
    "claude-opus-4-5": ModelPrice.of("5", "25"),
    "claude-opus-4-1": ModelPrice.of("15", "75"),
    "claude-opus-4": ModelPrice.of("15", "75"),
    "claude-sonnet-5": ModelPrice.of("3", "15", long_context=_SONNET_LONG),
    "claude-sonnet-4-6": ModelPrice.of("3", "15", long_context=_SONNET_LONG),
    "claude-sonnet-4-5": ModelPrice.of("3", "15", long_context=_SONNET_LONG),
    "claude-sonnet-4": ModelPrice.of("3", "15", long_context=_SONNET_LONG),
    "claude-3-7-sonnet": ModelPrice.of("3", "15"),
    "claude-haiku-4-5": ModelPrice.of("1", "5"),
    "claude-3-5-haiku": ModelPrice.of("0.80", "4"),
    "claude-3-haiku": ModelPrice.of("0.25", "1.25"),
}

_CLAUDE_ID = re.compile(r"claude-[a-z0-9-]+")
_MICRO = Decimal(1)
_FOUND_LIMIT = 4096


def model_family(model: str) -> str:
    """The Anthropic-style id inside any provider spelling.

    ``us.anthropic.claude-sonnet-4-5-20250929-v1:0`` and ``claude-sonnet-4-5@20250929``
    both give ``claude-sonnet-4-5-20250929``; ARNs give their last id.
    """
    matches = _CLAUDE_ID.findall(model.lower())
    if not matches:
        return model.lower()
    family: str = matches[-1]
    return family.removesuffix("-v1").removesuffix("-v2")


class PriceTable:
    """Looks a model up by longest family prefix; unknown models cost nothing but are
    reported by :meth:`price` returning ``None`` so callers can flag them."""

    __slots__ = ("_exact", "_found", "_prefixes", "_prices")

    def __init__(self, overrides: Mapping[str, ModelPrice] | None = None) -> None:
        prices = dict(BUNDLED_PRICES)
        prices.update(overrides or {})
        self._prices = prices
        self._prefixes = sorted(prices, key=len, reverse=True)
        #: id(price) -> its prices as integers (see _scaled); filled on first use.
        self._exact: dict[int, tuple[int, ...] | None] = {}
        #: model string -> price, so a request pays a dict lookup, not a regex and a scan.
        self._found: dict[str, ModelPrice | None] = {}

    def price(self, model: str) -> ModelPrice | None:
        try:
            return self._found[model]
        except KeyError:
            pass
        family = model_family(model)
        found = next((self._prices[p] for p in self._prefixes if family.startswith(p)), None)
        if len(self._found) >= _FOUND_LIMIT:  # model strings come from clients: stay bounded
            self._found.clear()
        self._found[model] = found
        return found

    def cost_micros(self, model: str, usage: Usage) -> int:
        """Cost of ``usage`` on ``model`` in integer micro-dollars (0 for unknown models)."""
        price = self.price(model)
        if price is None:
            return 0
        if price.long_context is not None and (
            usage.total_input_tokens > price.long_context_threshold
        ):
            price = price.long_context
        key = id(price)
        if key not in self._exact:
            self._exact[key] = _scaled(price)
        scaled = self._exact[key]
        return _cost_int(scaled, usage) if scaled is not None else _cost(price, usage)

    def worst_case_micros(self, model: str, input_tokens: int, max_tokens: int) -> int:
        """Upper bound for a request before it runs: every input token written to the
        1-hour cache (the dearest input class) plus ``max_tokens`` of output."""
        price = self.price(model)
        if price is None:
            return 0
        if price.long_context is not None and input_tokens > price.long_context_threshold:
            price = price.long_context
        total = Decimal(input_tokens) * max(price.input, price.cache_write_1h)
        total += Decimal(max_tokens) * price.output
        return _round_micros(total)


def _round_micros(usd_per_mtok_times_tokens: Decimal) -> int:
    # tokens x USD/MTok = micro-dollars exactly (1e6 tokens x $1/MTok = $1 = 1e6 micro-dollars).
    return int(usd_per_mtok_times_tokens.quantize(_MICRO, ROUND_HALF_UP))


def _cost(price: ModelPrice, usage: Usage) -> int:
    five_m = usage.cache_creation_5m_tokens
    one_h = usage.cache_creation_1h_tokens
    unsplit = max(usage.cache_creation_input_tokens - five_m - one_h, 0)
    total = (
        Decimal(usage.input_tokens) * price.input
        + Decimal(usage.output_tokens) * price.output
        + Decimal(five_m + unsplit) * price.cache_write_5m
        + Decimal(one_h) * price.cache_write_1h
        + Decimal(usage.cache_read_input_tokens) * price.cache_read
    )
    return _round_micros(total)


_SCALE = 10**6


def _scaled(price: ModelPrice) -> tuple[int, ...] | None:
    """Prices x 1e6 as integers when exact (any price with at most 6 decimals), so a cost is
    integer arithmetic: the same result as :func:`_cost`, several times faster per request."""
    values = (
        price.input,
        price.output,
        price.cache_write_5m,
        price.cache_write_1h,
        price.cache_read,
    )
    scaled = [v * _SCALE for v in values]
    if any(v != v.to_integral_value() for v in scaled):
        return None
    return tuple(int(v) for v in scaled)


def _cost_int(scaled: tuple[int, ...], usage: Usage) -> int:
    five_m = usage.cache_creation_5m_tokens
    one_h = usage.cache_creation_1h_tokens
    unsplit = max(usage.cache_creation_input_tokens - five_m - one_h, 0)
    total = (
        usage.input_tokens * scaled[0]
        + usage.output_tokens * scaled[1]
        + (five_m + unsplit) * scaled[2]
        + one_h * scaled[3]
        + usage.cache_read_input_tokens * scaled[4]
    )
    whole, rest = divmod(total, _SCALE)
    return whole + (1 if 2 * rest >= _SCALE else 0)  # half up, like _round_micros
