"""Shared type aliases and small enums used across llmgw."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from aiohttp import typedefs as aiohttp_typedefs
from aiohttp import web

__all__ = ("JSON", "ApiFormat", "Handler", "Middleware", "Operation")

JSON: TypeAlias = dict[str, Any]
Handler: TypeAlias = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware: TypeAlias = aiohttp_typedefs.Middleware


class ApiFormat(enum.StrEnum):
    """The three wire formats a client or a provider can speak."""

    ANTHROPIC = "anthropic"
    BEDROCK = "bedrock"
    VERTEX = "vertex"


class Operation(enum.StrEnum):
    """What a proxied request asks the model for."""

    MESSAGES = "messages"
    COUNT_TOKENS = "count_tokens"
