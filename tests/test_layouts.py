"""aiohttp's per-stream objects stay on CPython's compact attribute storage under llmgw
(``llmgw._layouts``): ~0.9 KB less Python heap per open stream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    sys.implementation.name != "cpython" or sys.version_info[:2] not in ((3, 11), (3, 12)),
    reason="checks CPython 3.11/3.12's shared-key instance dicts",
)

_PROBE = Path(__file__).with_name("_layout_probe.py")
_STREAMS = 32


def _census(mode: str) -> dict[str, list[int]]:
    """[alive, with a dict of its own] per class, with 32 streams open at once (each counted
    twice: the test client's response and the proxy's upstream one, in one process)."""
    done = subprocess.run(
        [sys.executable, str(_PROBE), mode, str(_STREAMS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    census: dict[str, list[int]] = json.loads(done.stdout.strip().splitlines()[-1])
    return census


def test_streams_opened_at_once_through_llmgw_keep_no_per_instance_dicts() -> None:
    census = _census("llmgw")
    assert census == {"ClientResponse": [2 * _STREAMS, 0], "StreamWriter": [2 * _STREAMS, 0]}


def test_the_same_streams_through_a_plain_aiohttp_proxy_each_get_one() -> None:
    """What priming prevents, measured by the same census: it is not a check that cannot fail."""
    census = _census("plain")
    assert [alive for alive, _ in census.values()] == [2 * _STREAMS, 2 * _STREAMS]
    assert all(with_dict > 0 for _, with_dict in census.values())  # all of them, here
