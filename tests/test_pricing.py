"""Costs are exact integer micro-dollars for every token class, tier and provider spelling;
configuration overrides and extends the bundled table."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llmgw.config import parse_config
from llmgw.errors import ConfigError
from llmgw.pricing import PRICES_AS_OF, PriceTable, model_family, price_table
from llmgw.usage import Usage

TABLE = PriceTable()


def usage(**tokens: int) -> Usage:
    return Usage(**tokens)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tokens", "micros"),
    [
        # Sonnet 4.6: $3 in, $15 out, 5m write $3.75, 1h write $6, read $0.30 per MTok.
        ({"input_tokens": 100_000}, 300_000),
        ({"output_tokens": 1_000_000}, 15_000_000),
        ({"cache_creation_input_tokens": 1000, "cache_creation_5m_tokens": 1000}, 3750),
        ({"cache_creation_input_tokens": 1000, "cache_creation_1h_tokens": 1000}, 6000),
        ({"cache_read_input_tokens": 1000}, 300),
        # An unsplit cache write is billed at the 5-minute (default) price.
        ({"cache_creation_input_tokens": 1000}, 3750),
        (
            {
                "input_tokens": 3,
                "output_tokens": 1,
                "cache_creation_input_tokens": 3,
                "cache_creation_5m_tokens": 1,
                "cache_creation_1h_tokens": 2,
                "cache_read_input_tokens": 7,
            },
            # 9 + 15 + 3.75 + 12 + 2.1 = 41.85 -> 42 (one rounding, half up)
            42,
        ),
        ({"cache_read_input_tokens": 5}, 2),  # 1.5 -> 2
        ({"cache_read_input_tokens": 1}, 0),  # 0.3 -> 0
    ],
)
def test_sonnet_costs_are_exact(tokens: dict[str, int], micros: int) -> None:
    assert TABLE.cost_micros("claude-sonnet-4-6", usage(**tokens)) == micros


def test_long_context_tier_applies_above_200k_total_input() -> None:
    at = usage(input_tokens=100_000, cache_read_input_tokens=100_000, output_tokens=1000)
    above = usage(input_tokens=100_001, cache_read_input_tokens=100_000, output_tokens=1000)
    # At 200k: 100k x 3 + 100k x 0.3 + 1000 x 15 = 345_000.
    assert TABLE.cost_micros("claude-sonnet-4-5-20250929", at) == 345_000
    # Above: 100_001 x 6 + 100k x 0.6 + 1000 x 22.5 = 682_506.
    assert TABLE.cost_micros("claude-sonnet-4-5-20250929", above) == 682_506


@pytest.mark.parametrize(
    ("model", "micros"),
    [
        ("claude-opus-4-1-20250805", 15),
        ("claude-opus-4-8", 5),
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", 1),
        ("claude-3-5-haiku@20241022", 1),  # 0.8 -> 1
        ("arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-opus-4-1-v1:0", 15),
        ("claude-sonnet-4-5@20250929", 3),
    ],
)
def test_provider_spellings_find_the_family_price(model: str, micros: int) -> None:
    assert TABLE.cost_micros(model, usage(input_tokens=1)) == micros


def test_unknown_models_have_no_price() -> None:
    assert TABLE.price("gpt-5") is None
    assert TABLE.cost_micros("gpt-5", usage(input_tokens=10**6)) == 0
    assert model_family("GPT-5") == "gpt-5"


def test_worst_case_prices_every_input_token_as_a_1h_write() -> None:
    # Haiku 4.5: 1000 x $2 (1h write) + 500 x $5 = 4500 micro-dollars.
    assert TABLE.worst_case_micros("claude-haiku-4-5", 1000, 500) == 4500


def test_config_overrides_a_bundled_price_and_adds_a_model() -> None:
    config = parse_config(
        {
            "pricing": {
                "claude-sonnet-4-6": {"input": 2.5, "output": "12.5", "cache_read": 0.2},
                "my-finetune": {
                    "input": 1,
                    "output": 2,
                    "long_context_input": 4,
                    "long_context_output": 8,
                    "long_context_threshold": 10,
                },
            }
        }
    )
    table = price_table(config.pricing)
    sonnet = table.price("claude-sonnet-4-6")
    assert sonnet is not None
    assert (sonnet.input, sonnet.cache_read, sonnet.cache_write_5m, sonnet.cache_write_1h) == (
        Decimal("2.5"),
        Decimal("0.2"),
        Decimal("3.125"),
        Decimal("5.0"),
    )
    assert table.cost_micros("claude-sonnet-4-6", usage(cache_read_input_tokens=10)) == 2
    assert table.cost_micros("my-finetune-v2", usage(input_tokens=10)) == 10
    assert table.cost_micros("my-finetune-v2", usage(input_tokens=11)) == 44
    # Others keep the bundled prices.
    assert table.cost_micros("claude-opus-4-8", usage(input_tokens=1)) == 5


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"output": 1}, 'pricing."m".input: required'),
        ({"input": 1, "output": -1}, 'pricing."m".output: must be a non-negative number'),
        ({"input": "cheap", "output": 1}, 'pricing."m".input: expected a number'),
        ({"input": 1, "output": 1, "long_context_input": 2}, "long_context_output, or neither"),
        ({"input": 1, "output": 1, "typo": 1}, 'pricing."m".typo: unknown key'),
    ],
)
def test_bad_price_entries_are_config_errors(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace('"', '"')):
        parse_config({"pricing": {"m": entry}})


def test_the_bundled_table_is_dated() -> None:
    assert PRICES_AS_OF.count("-") == 2


def test_integer_fast_path_equals_the_decimal_sum() -> None:
    import random

    from llmgw.pricing import _cost, _cost_int, _scaled

    rng = random.Random(5)
    for price in (TABLE.price("claude-sonnet-4-6"), TABLE.price("claude-3-5-haiku")):
        assert price is not None
        scaled = _scaled(price)
        assert scaled is not None
        for _ in range(500):
            five_m, one_h = rng.randrange(10**6), rng.randrange(10**6)
            u = usage(
                input_tokens=rng.randrange(10**6),
                output_tokens=rng.randrange(10**5),
                cache_creation_input_tokens=five_m + one_h + rng.randrange(3),
                cache_creation_5m_tokens=five_m,
                cache_creation_1h_tokens=one_h,
                cache_read_input_tokens=rng.randrange(10**7),
            )
            assert _cost_int(scaled, u) == _cost(price, u)
