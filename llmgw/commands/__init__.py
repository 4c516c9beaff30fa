"""Subcommands of the ``llmgw`` CLI; each module has ``register(subparsers)`` and ``run(args)``."""
