"""``llmgw limits set|get|list|delete``: per-entity limit sets in the store ``llmgw serve``
uses (``storage.url`` of the same config).

A change made here reaches every running gateway within its ``limits.policy_ttl``::

    llmgw limits set team core --rpm 600 --budget 500:monthly:0.8 -c gateway.toml
    llmgw limits set user ada --json '{"tpm": 400000, "budgets": [{"usd": 25, "period": "daily"}]}'
    llmgw limits get team core
    llmgw limits list --tier team
    llmgw limits delete team core
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ..config import GatewayConfig, load_config
from ..errors import ConfigError
from ..limits.policy import parse_limit_set
from ..limits.store import LimitPolicy, LimitPolicyStore, check_scope, parse_tier
from ..storage import open_database

__all__ = ("register", "run")


def _budget(text: str) -> dict[str, Any]:
    """``USD[:PERIOD[:WARN_AT]]`` → a budget table (period defaults to monthly)."""
    usd, _, rest = text.partition(":")
    period, _, warn = rest.partition(":")
    try:
        out: dict[str, Any] = {"usd": float(usd), "period": period or "monthly"}
        if warn:
            out["warn_at"] = float(warn)
    except ValueError:
        msg = f"expected USD[:PERIOD[:WARN_AT]] like 25:daily:0.8, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    return out


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    limits = commands.add_parser("limits", help="per-key/user/team/project limits and budgets")
    actions = limits.add_subparsers(dest="limits_action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="the gateway's TOML (or .json) config file")
    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument("tier", help="global, key, user, team, project or session")
    scope.add_argument("name", help="the key id, user, team... ('*' for global)")

    put = actions.add_parser(
        "set", parents=[common, scope], help="replace the limit set (unset fields: tier default)"
    )
    put.add_argument("--rpm", type=int, help="requests per minute")
    put.add_argument("--tpm", type=int, help="tokens per minute (input + output)")
    put.add_argument("--concurrent", type=int, help="open streams at once")
    put.add_argument(
        "--budget",
        type=_budget,
        action="append",
        default=[],
        help="USD[:PERIOD[:WARN_AT]], e.g. 25:daily:0.8 or 100:7d (repeat)",
    )
    put.add_argument("--json", dest="raw", help="the whole limit set as JSON instead")

    actions.add_parser("get", parents=[common, scope], help="show one limit set")
    listing = actions.add_parser("list", parents=[common], help="list limit sets")
    listing.add_argument("--tier", help="only this tier")
    actions.add_parser("delete", parents=[common, scope], help="remove a limit set")
    limits.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else GatewayConfig()
    try:
        return asyncio.run(_run(config, args))
    except ConfigError as exc:  # a bad tier, name or limit: exit 1, naming the field
        print(f"llmgw limits: {exc}", file=sys.stderr)
        return 1


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    if args.raw is not None:
        if args.rpm is not None or args.tpm is not None or args.concurrent is not None:
            raise ConfigError("--json: give the limit set as JSON or as options, not both")
        try:
            data: dict[str, Any] = json.loads(args.raw)
        except ValueError as exc:
            raise ConfigError(f"--json: not valid JSON: {exc}") from None
        return data
    data = {
        k: getattr(args, k) for k in ("rpm", "tpm", "concurrent") if getattr(args, k) is not None
    }
    if args.budget:
        data["budgets"] = args.budget
    return data


async def _run(config: GatewayConfig, args: argparse.Namespace) -> int:
    action: str = args.limits_action
    if action == "list":
        tier = parse_tier(args.tier) if args.tier else None
    else:
        tier = check_scope(args.tier, args.name)
    limits = parse_limit_set(_limits(args), "limits") if action == "set" else None
    db = open_database(config.storage.url)
    await db.open()
    try:
        store = LimitPolicyStore(db)
        await store.open()
        if action == "list":
            policies = await store.list(tier)
            print(json.dumps({"data": [p.to_json() for p in policies]}, indent=2))
            return 0
        assert tier is not None
        policy: LimitPolicy | None
        if action == "set":
            assert limits is not None
            policy = await store.put(tier, args.name, limits)
        elif action == "get":
            policy = await store.get(tier, args.name)
        else:
            policy = await store.delete(tier, args.name)
        if policy is None:
            print(f"llmgw limits: no limits set for {tier.value} {args.name!r}", file=sys.stderr)
            return 1
        print(json.dumps(policy.to_json(), indent=2))
        return 0
    finally:
        await db.close()
