"""The request path's JSON parsing reads exactly what the standard library reads, with
orjson (``llmgw[speedups]``) installed or not."""

from __future__ import annotations

import json
import math

import pytest

from llmgw._json import dumps_canonical, dumps_line, loads
from llmgw.usage import Outcome
from tests.conftest import GatewayFactory
from tests.fakes.anthropic import FakeAnthropic

#: JavaScript's JSON.stringify writes a lone surrogate as an escape: a string cut inside
#: an emoji (JavaScript slices strings by UTF-16 code unit).
CUT_EMOJI = json.dumps(
    {
        "model": "claude-sonnet-4-6",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "cut \ud83d"}],
    }
).encode()
assert b"\\ud83d" in CUT_EMOJI


@pytest.mark.parametrize(
    "raw",
    [
        CUT_EMOJI,
        b'\xef\xbb\xbf{"a": 1}',  # a byte order mark
        b'{"a": "caf\xc3\xa9", "b": [1, 2.5, true, null], "c": {"d": "\\u00e9\\n"}}',
        b'{"a": 12345678901234567890}',  # fits 64 bits unsigned
    ],
    ids=["lone-surrogate", "bom", "plain", "big-int"],
)
def test_loads_reads_what_the_standard_library_reads(raw: bytes) -> None:
    assert loads(raw) == json.loads(raw)


def test_loads_reads_nan_as_the_standard_library_does() -> None:
    assert math.isnan(loads(b'{"a": NaN}')["a"])


@pytest.mark.parametrize("raw", [b"{not json", b'{"a": 1,}', b"\xff", b""])
def test_loads_refuses_what_the_standard_library_refuses(raw: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(ValueError):
        loads(raw)


async def test_a_prompt_cut_inside_an_emoji_reaches_the_upstream_unchanged(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway()
    resp = await client.post(
        "/v1/messages", data=CUT_EMOJI, headers={"anthropic-version": "2023-06-01"}
    )
    assert resp.status == 200, await resp.text()
    assert fake_anthropic.requests[-1].body == CUT_EMOJI


def test_dumps_line_writes_one_line_the_standard_library_reads_back() -> None:
    value = ("c1", Outcome.COMPLETE, "caf\u00e9\nnext line", 0.25, None, True, [("a", 200, None)])
    line = dumps_line(value)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == [
        "c1",
        "complete",
        "caf\u00e9\nnext line",
        0.25,
        None,
        True,
        [["a", 200, None]],
    ]


def test_dumps_line_writes_integers_beyond_64_bits() -> None:
    assert json.loads(dumps_line((2**70, -(2**70)))) == [2**70, -(2**70)]


def test_loads_refuses_a_too_deep_nesting_with_a_value_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(deep)
    with pytest.raises(ValueError, match="nested too deeply"):
        loads(deep)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [True, None, {"z": "caf\u00e9 \u2028 \x00\x1f\x7f \U0001f600"}]},
        {"ts": 1780000000.123456, "ms": 12.345, "zero": 0.0, "neg": -0.0, "big": 1e16},
        {"tiny": 1e-05, "tinier": [2.5e-07]},  # orjson writes these as 0.00001 and 2.5e-7
        {"nan": math.nan, "inf": [-math.inf]},
        {"big": 2**70},  # beyond orjson's 64 bits
        {"cut": "\ud83d"},  # a lone surrogate
        {"\u00e9": 1, "e": 2, "\U0001f600": 3, "Z": (4, 5)},  # sorted by code point
        {1: "non-string key"},
    ],
    ids=["strings", "floats", "tiny-floats", "nan", "big-int", "surrogate", "keys", "int-key"],
)
def test_dumps_canonical_is_the_standard_librarys_canonical_text(value: object) -> None:
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert dumps_canonical(value) == expected
