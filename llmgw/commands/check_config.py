"""``llmgw check-config FILE``: validate a config file and exit."""

from __future__ import annotations

import argparse

from ..config import load_config

__all__ = ("register", "run")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    load_config(args.config)
    print(f"{args.config}: ok")
    return 0
