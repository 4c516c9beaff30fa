"""``llmgw audit verify`` and ``llmgw audit export``: read the audit log from the command line.

The store comes from the config file's ``[audit]`` section (or ``--db``/``--jsonl``).
``verify`` exits 0 when every chain is intact, 1 at the first altered, missing or
reordered record of any chain, and lists requests that started but never completed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

from ..audit.base import AuditQuery
from ..audit.chain import canonical, verify
from ..audit.setup import hmac_key, open_reader
from ..config import AuditConfig, GatewayConfig, StorageConfig, load_config
from ..errors import ConfigError

__all__ = ("parse_since", "register", "run")

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="verify or export the audit log")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    for name, helptext in (
        ("verify", "walk every chain; report the first altered, missing or reordered record"),
        ("export", "write records as JSON Lines (the sealed envelopes, verifiable offline)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("-c", "--config", help="gateway config file (its [audit] section)")
        src = p.add_mutually_exclusive_group()
        src.add_argument("--db", help="database URL holding the audit table")
        src.add_argument("--jsonl", help="audit JSON Lines file")
        p.set_defaults(run=run)
        if name == "verify":
            p.add_argument(
                "--hmac-key-env", help="environment variable with the signing key (overrides)"
            )
        else:
            p.add_argument("--since", required=True, help="ISO time, epoch seconds, or 15m/2h/7d")
            p.add_argument("--until", help="ISO time, epoch seconds, or 15m/2h/7d ago")
            p.add_argument("--format", choices=("jsonl",), default="jsonl")
            p.add_argument("--kind", help="request, request.start or admin")
            p.add_argument("--key-id")
            p.add_argument("-o", "--output", help="file to write (default: stdout)")


def parse_since(value: str, *, now: float | None = None) -> float:
    """Epoch seconds from ``2026-01-31``, ``2026-01-31T12:00:00Z``, ``1767225600`` or ``2h``."""
    now = time.time() if now is None else now
    value = value.strip()
    rel = _RELATIVE.match(value)
    if rel:
        return now - float(rel.group(1)) * _UNIT[rel.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since/--until: cannot read {value!r} as a time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _config(args: argparse.Namespace) -> GatewayConfig:
    config = load_config(args.config) if args.config else GatewayConfig()
    audit = config.audit
    if args.jsonl:
        audit = dataclasses.replace(audit, sink="jsonl", path=args.jsonl)
    elif args.db:
        audit = dataclasses.replace(audit, sink="database", url=args.db)
    if getattr(args, "hmac_key_env", None):
        audit = dataclasses.replace(audit, hmac_key_env=args.hmac_key_env)
    if not args.config and not args.jsonl and not args.db:
        storage = StorageConfig(url=config.storage.url)
        return dataclasses.replace(config, storage=storage, audit=AuditConfig())
    return dataclasses.replace(config, audit=audit)


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.audit_command == "verify":
        return asyncio.run(_verify(config, sys.stdout))
    out: TextIO
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            return asyncio.run(_export(config, args, out))
    return asyncio.run(_export(config, args, sys.stdout))


async def _verify(config: GatewayConfig, out: TextIO) -> int:
    key = hmac_key(config.audit)
    reader, close = await open_reader(config)
    try:
        report = verify([entry async for entry in reader.entries()], key=key)
    finally:
        await close()
    for name, chain in sorted(report.chains.items()):
        state = "ok" if chain.problem is None else "FAILED"
        out.write(f"chain {name!r}: {chain.records} records, last seq {chain.last_seq}: {state}\n")
    for problem in report.problems:
        out.write(f"FAIL {problem}\n")
    if report.incomplete:
        shown = ", ".join(report.incomplete[:20])
        more = " ..." if len(report.incomplete) > 20 else ""
        out.write(
            f"incomplete: {len(report.incomplete)} request(s) started and never completed: "
            f"{shown}{more}\n"
        )
    signed = " (signatures checked)" if key is not None else ""
    verdict = "ok" if report.ok else "TAMPERED"
    out.write(f"{verdict}: {report.records} records in {len(report.chains)} chain(s){signed}\n")
    return 0 if report.ok else 1


async def _export(config: GatewayConfig, args: argparse.Namespace, out: TextIO) -> int:
    query = AuditQuery(
        since=parse_since(args.since),
        until=parse_since(args.until) if args.until else None,
        kind=args.kind,
        key_id=args.key_id,
    )
    reader, close = await open_reader(config)
    count = 0
    try:
        async for sealed in reader.query(query):
            out.write(canonical(sealed.envelope()) + "\n")
            count += 1
    finally:
        await close()
    print(f"exported {count} records", file=sys.stderr)
    return 0
