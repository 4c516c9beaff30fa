"""``llmgw usage --by team --since 7d``: the usage report as a table (or ``--json``).

Reads the store the gateway writes (``storage.url`` of the config); it writes nothing, so
it is safe to run beside a live gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from ..config import GatewayConfig, load_config
from ..metering.report import GROUP_BY, UsageReport, build_report, format_table, parse_time
from ..metering.store import SQLUsageStore
from ..storage.db import open_database

__all__ = ("register", "run")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = commands.add_parser("usage", help="report token usage and cost")
    usage.add_argument("-c", "--config", help="TOML (or .json) config file")
    usage.add_argument("--by", choices=GROUP_BY, default="key", help="group by (default: key)")
    usage.add_argument("--since", default="7d", help="7d, 24h, 30m, an ISO date, Unix seconds")
    usage.add_argument("--until", help="end of the range (default: now)")
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    usage.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else GatewayConfig()
    now = time.time()
    try:
        since = parse_time(args.since, now=now)
        until = parse_time(args.until, now=now) if args.until else now
    except ValueError as exc:
        print(f"llmgw usage: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(_report(config, args.by, since, until))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_table(report))
    return 0


async def _report(config: GatewayConfig, by: str, since: float, until: float) -> UsageReport:
    db = open_database(config.storage.url)
    await db.open()
    try:
        store = SQLUsageStore(db)
        await store.open()
        return await build_report(store, by, since=since, until=until)
    finally:
        await db.close()
