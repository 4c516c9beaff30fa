"""The ``llmgw`` command. Logging is configured here and only here."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .commands import audit, check_config, keys, limits, serve, usage
from .errors import ConfigError

__all__ = ("main",)

#: Each subcommand module contributes its parser; order is the order ``--help`` shows.
_COMMANDS = (serve, check_config, audit, keys, usage, limits)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code so tests can call it in-process."""
    parser = argparse.ArgumentParser(prog="llmgw", description="An LLM gateway for Claude Code.")
    parser.add_argument("--version", action="version", version=f"llmgw {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("LLMGW_LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)
    for module in _COMMANDS:
        module.register(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ConfigError as exc:
        print(f"llmgw: config error: {exc}", file=sys.stderr)
        return 2
