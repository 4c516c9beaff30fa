"""Released request bodies give their memory back: ``llmgw serve`` trims glibc's heap after
large bodies, at a bounded rate."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmgw import _trim
from llmgw.config import load_config
from tests.conftest import GatewayFactory
from tests.fakes.anthropic import FakeAnthropic

INTERVAL = 0.05


@pytest.fixture
def trimming() -> Iterator[None]:
    if not _trim.enable(INTERVAL):
        pytest.skip("this C library has no malloc_trim")
    yield
    _trim.disable()


@pytest.mark.usefixtures("trimming")
async def test_one_trim_follows_a_burst_of_large_bodies() -> None:
    before = _trim.trims
    for _ in range(5):
        _trim.released(_trim.LARGE_BODY)
    await asyncio.sleep(INTERVAL * 3)
    assert _trim.trims == before + 1
    _trim.released(_trim.LARGE_BODY)  # after the trim ran: a new one is due
    await asyncio.sleep(INTERVAL * 3)
    assert _trim.trims == before + 2


@pytest.mark.usefixtures("trimming")
async def test_small_bodies_never_trim() -> None:
    before = _trim.trims
    _trim.released(_trim.LARGE_BODY - 1)
    await asyncio.sleep(INTERVAL * 3)
    assert _trim.trims == before


async def test_nothing_is_trimmed_unless_enabled() -> None:
    before = _trim.trims
    _trim.released(10 * _trim.LARGE_BODY)
    await asyncio.sleep(INTERVAL * 3)
    assert _trim.trims == before


@pytest.mark.usefixtures("trimming")
async def test_the_relay_reports_the_large_body_it_released(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    client = await gateway()
    before = _trim.trims
    prompt = "x" * (2 * _trim.LARGE_BODY)
    message = {"role": "user", "content": prompt}
    body = {"model": "claude-sonnet-4-6", "max_tokens": 10, "stream": True, "messages": [message]}
    resp = await client.post("/v1/messages", data=json.dumps(body))
    assert resp.status == 200
    await resp.read()
    await asyncio.sleep(INTERVAL * 3)
    assert _trim.trims == before + 1


def test_serve_trims_by_default_and_the_config_can_say_no(tmp_path: Path) -> None:
    path = tmp_path / "llmgw.toml"
    path.write_text("[server]\nport = 0\n")
    assert load_config(path).server.malloc_trim is True
    path.write_text("[server]\nmalloc_trim = false\n")
    assert load_config(path).server.malloc_trim is False
