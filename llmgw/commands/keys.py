"""``llmgw keys create|list|show|revoke|rotate``: manage virtual keys in the store
``llmgw serve`` uses (``storage.url`` of the same config, ``auth.key_secret_env`` set).

A revoke or update made here reaches running gateways within their ``auth.cache_ttl``.
With ``[audit]`` enabled, every change (create, rotate, revoke) is an ``admin`` audit
record by the ``cli`` actor, on the ``<chain>.cli`` chain (:mod:`llmgw.audit.oneshot`); the
audit store is opened before the change, so a broken audit setup stops the change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from ..audit.oneshot import CliAuditLog, cli_audit_log
from ..audit.writer import AuditUnavailableError
from ..auth.keys import KeyHasher
from ..auth.manage import KeyManager, KeySpec
from ..auth.setup import key_hasher
from ..auth.sql import SQLKeyStore
from ..auth.store import KeyRecord
from ..config import GatewayConfig, load_config
from ..errors import LlmgwError
from ..storage import open_database

__all__ = ("register", "run")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """``3600``, ``90m``, ``12h``, ``30d`` → seconds."""
    unit = _UNITS.get(text[-1:])
    try:
        value = float(text[:-1]) if unit else float(text)
    except ValueError:
        msg = f"not a duration: {text!r} (e.g. 3600, 90m, 12h, 30d)"
        raise argparse.ArgumentTypeError(msg) from None
    return value * (unit or 1)


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"expected 1 to 10000, got {text!r}")
    return value


def _limit(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="manage virtual keys")
    actions = keys.add_subparsers(dest="keys_action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="the gateway's TOML (or .json) config file")
    common.add_argument("--json", action="store_true", help="print JSON")

    create = actions.add_parser("create", parents=[common], help="mint a key (shown once)")
    create.add_argument("--name")
    create.add_argument("--user")
    create.add_argument("--team")
    create.add_argument("--project")
    create.add_argument("--model", action="append", dest="models", help="allowed model (repeat)")
    create.add_argument("--limit", action="append", type=_limit, default=[], help="NAME=VALUE")
    create.add_argument("--expires-in", type=_duration, help="e.g. 30d, 12h, 3600")

    listing = actions.add_parser("list", parents=[common], help="list keys (never secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--limit", type=_page_size, default=100, help="keys per page (100)")
    listing.add_argument("--after", metavar="KEY_ID", help="start after this key (next page)")

    show = actions.add_parser("show", parents=[common], help="show one key")
    show.add_argument("key_id")

    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("key_id")

    rotate = actions.add_parser("rotate", parents=[common], help="new secret, old one in grace")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace", type=_duration, default=3600.0, help="old key stays valid")
    keys.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else GatewayConfig()
    try:
        return asyncio.run(_run(config, args))
    except LlmgwError as exc:
        print(f"llmgw keys: {exc.message}", file=sys.stderr)
        return 1


_CHANGES = ("create", "revoke", "rotate")


async def _run(config: GatewayConfig, args: argparse.Namespace) -> int:
    hasher = key_hasher(config.auth)
    audit = cli_audit_log(config) if args.keys_action in _CHANGES else None
    if audit is None:
        return await _keys(config, args, hasher, None)
    async with audit:
        return await _keys(config, args, hasher, audit)


async def _keys(
    config: GatewayConfig, args: argparse.Namespace, hasher: KeyHasher, audit: CliAuditLog | None
) -> int:
    db = open_database(config.storage.url)
    await db.open()
    try:
        store = SQLKeyStore(db)
        await store.open()
        manager = KeyManager(store, hasher)
        action: str = args.keys_action
        if action == "create":
            spec = KeySpec(
                name=args.name,
                user=args.user,
                team=args.team,
                project=args.project,
                allowed_models=args.models,
                limits=dict(args.limit),
                expires_at=time.time() + args.expires_in if args.expires_in else None,
            )
            record, new = await manager.create(spec)
            _emit(args, {"key": record.public(), "secret": new.secret}, record, new.secret)
            details = {
                "name": spec.name,
                "user": spec.user,
                "team": spec.team,
                "project": spec.project,
                "allowed_models": args.models,
                "limits": dict(spec.limits),
                "expires_at": spec.expires_at,
            }
            await _audited(audit, "key.create", record.key_id, details)
        elif action == "list":
            records, more = await manager.page(
                limit=args.limit, after=args.after, include_revoked=args.all
            )
            last = records[-1].key_id if records else None
            if args.json:
                page = {"data": [r.public() for r in records], "has_more": more, "last_id": last}
                print(json.dumps(page, indent=2))
            for r in records if not args.json else ():
                print(_line(r))
            if more and not args.json:
                print(f"(more keys: llmgw keys list --after {last})", file=sys.stderr)
        elif action == "show":
            record = await manager.get(args.key_id)
            _emit(args, record.public(), record, None)
        elif action == "revoke":
            already = (await manager.get(args.key_id)).revoked_at is not None
            record = await manager.revoke(args.key_id)
            _emit(args, record.public(), record, None)
            if not already:  # as the admin API: a repeated revoke changes nothing
                await _audited(audit, "key.revoke", record.key_id, {})
        else:
            record, new, until = await manager.rotate(args.key_id, grace=args.grace)
            out = {"key": record.public(), "secret": new.secret, "previous_valid_until": until}
            _emit(args, out, record, new.secret)
            if not args.json:
                print(f"previous secret valid until {_when(until)}")
            details = {"grace_seconds": args.grace, "previous_valid_until": until}
            await _audited(audit, "key.rotate", record.key_id, details)
    finally:
        await db.close()
    return 0


async def _audited(
    audit: CliAuditLog | None, action: str, target: str, details: dict[str, Any]
) -> None:
    if audit is None:
        return
    try:
        await audit.record(action=action, target=target, details=details)
    except LlmgwError as exc:  # the change is done: say so, and that the log missed it
        msg = f"{action} {target} was made but is NOT audited: {exc.message}"
        raise AuditUnavailableError(msg) from None


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _line(r: KeyRecord) -> str:
    state = "revoked" if r.revoked_at is not None else "active"
    models = ",".join(r.allowed_models) if r.allowed_models is not None else "*"
    return (
        f"{r.key_id}  {state:7}  {r.hint}  name={r.name or '-'} user={r.user or '-'} "
        f"team={r.team or '-'} project={r.project or '-'} models={models} "
        f"expires={_when(r.expires_at)}"
    )


def _emit(args: argparse.Namespace, data: Any, record: KeyRecord, secret: str | None) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
        return
    print(_line(record))
    if secret is not None:
        print(f"secret: {secret}")
        print("(shown once: store it now; the gateway keeps only a keyed hash)", file=sys.stderr)
