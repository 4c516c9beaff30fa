"""Usage reports: ``GET /admin/usage`` behind the admin credential, and ``llmgw usage``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from llmgw.cli import main
from llmgw.demo import DemoUsage
from llmgw.keys import USAGE_WRITER
from llmgw.metering import SQLUsageStore, UsageRecord
from llmgw.metering.report import parse_time
from llmgw.storage.db import open_database
from tests.conftest import GatewayFactory
from tests.fakes.anthropic import FakeAnthropic, Reply

ADMIN_KEY = "admin-key-0123456789abcdef"
BODY = {
    "model": "claude-haiku-4-5",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "x"}],
}


async def test_admin_usage_groups_by_session_with_totals_cost_and_cache_ratio(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMGW_ADMIN_KEY", ADMIN_KEY)
    fake_anthropic.queue(
        Reply(usage=DemoUsage(input_tokens=100, output_tokens=10, cache_read=900)),
        Reply(usage=DemoUsage(input_tokens=50, output_tokens=20, cache_creation_5m=50)),
        Reply(usage=DemoUsage(input_tokens=1000, output_tokens=0)),
    )
    client = await gateway()
    for session in ("s1", "s1", "s2"):
        headers = {"anthropic-version": "2023-06-01", "x-claude-code-session-id": session}
        assert (await client.post("/v1/messages", json=BODY, headers=headers)).status == 200
    await client.app[USAGE_WRITER].flush()

    refused = await client.get("/admin/usage?by=session")
    assert refused.status in (401, 403)
    resp = await client.get("/admin/usage?by=session&since=1h", headers={"x-api-key": ADMIN_KEY})
    assert resp.status == 200
    report = await resp.json()
    groups = {g["group"]: g for g in report["groups"]}
    # Haiku 4.5 ($1 in, $5 out, 5m write $1.25, read $0.10 per MTok), in micro-dollars:
    # s1: 150 in + 30 out x 5 + 50 x 1.25 + 900 x 0.1 = 150 + 150 + 62.5 + 90 -> 453 (rounded
    # per request: 100+50+90 = 240 and 50+100+62.5 = 212.5 -> 213 ... = 453).
    assert groups["s1"]["requests"] == 2
    assert groups["s1"]["input_tokens"] == 150
    assert groups["s1"]["cache_read_tokens"] == 900
    assert groups["s1"]["cost_micros"] == 240 + 213
    assert groups["s1"]["cache_hit_ratio"] == round(900 / 1100, 4)
    assert groups["s2"]["cost_micros"] == 1000
    assert report["total"]["requests"] == 3
    assert report["total"]["cost_micros"] == 1453
    assert report["by"] == "session"

    bad = await client.get("/admin/usage?by=password", headers={"x-api-key": ADMIN_KEY})
    assert bad.status == 400


def _seed(db_path: Path, records: list[UsageRecord]) -> None:
    async def seed() -> None:
        db = open_database(f"sqlite:///{db_path}")
        await db.open()
        store = SQLUsageStore(db)
        await store.open()
        await store.write(records)
        await db.close()

    asyncio.run(seed())


def test_cli_prints_the_same_report_as_a_table_and_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "gw.db"
    now = time.time()
    _seed(
        db,
        [
            UsageRecord(
                request_id="a",
                started_at=now - 3600,
                team="core",
                outcome="complete",
                input_tokens=10,
                cache_read_tokens=30,
                cost_micros=1_500_000,
            ),
            UsageRecord(
                request_id="b",
                started_at=now - 60,
                team="web",
                outcome="timeout",
                input_tokens=5,
                cost_micros=250_000,
            ),
            UsageRecord(
                request_id="old",
                started_at=now - 30 * 86400,
                team="core",
                outcome="complete",
                cost_micros=9_000_000,
            ),
        ],
    )
    config = tmp_path / "llmgw.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{db}"\n')

    assert main(["usage", "-c", str(config), "--by", "team", "--since", "7d"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["team", "requests"]
    assert table[2].split()[0] == "core" and "1.500000" in table[2]
    assert table[3].split()[0] == "web"
    assert table[-1].split()[:2] == ["TOTAL", "2"] and "1.750000" in table[-1]

    assert main(["usage", "-c", str(config), "--by", "team", "--since", "7d", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [g["group"] for g in report["groups"]] == ["core", "web"]
    assert report["groups"][0]["cache_hit_ratio"] == 0.75
    assert report["groups"][1]["not_complete"] == 1
    assert report["total"]["cost_usd"] == "1.750000"


def test_cli_rejects_a_bad_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "llmgw.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    assert main(["usage", "-c", str(config), "--since", "yesterday"]) == 2
    assert "invalid time" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", 1_000_000.0 - 7 * 86400),
        ("24h", 1_000_000.0 - 86400),
        ("30m", 1_000_000.0 - 1800),
        ("1700000000", 1_700_000_000.0),
        ("2026-01-01", 1_767_225_600.0),
        ("2026-01-01T01:00:00+01:00", 1_767_225_600.0),
    ],
)
def test_parse_time_accepts_relative_iso_and_unix(text: str, expected: float) -> None:
    assert parse_time(text, now=1_000_000.0) == expected
