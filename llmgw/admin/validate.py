"""JSON-body reading and field checks for admin handlers; every error names the field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .._json import loads
from ..errors import InvalidRequestError

__all__ = (
    "opt_number",
    "opt_object",
    "opt_str",
    "opt_str_list",
    "read_json",
    "reject_unknown",
)

_MAX_BODY = 1024 * 1024


async def read_json(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}`` when ``allow_empty``)."""
    raw = await request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        raise InvalidRequestError("body: larger than 1 MiB")
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidRequestError("body: expected a JSON object")
    try:
        body = loads(raw)
    except ValueError as exc:
        raise InvalidRequestError(f"body: not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("body: expected a JSON object")
    return body


def reject_unknown(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidRequestError(
            f"{unknown[0]}: unknown field (expected one of {', '.join(allowed)})"
        )


def opt_str(body: Mapping[str, Any], name: str, *, max_len: int = 256) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name}: expected a string or null")
    if not value or len(value) > max_len:
        raise InvalidRequestError(f"{name}: must be 1 to {max_len} characters")
    return value


def opt_str_list(body: Mapping[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidRequestError(f"{name}: expected a list of strings or null")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InvalidRequestError(f"{name}[{i}]: expected a non-empty string")
    return value


def opt_object(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{name}: expected a JSON object")
    return value


def opt_number(body: Mapping[str, Any], name: str, *, minimum: float | None = None) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequestError(f"{name}: expected a number")
    if minimum is not None and value < minimum:
        raise InvalidRequestError(f"{name}: must be at least {minimum:g}")
    return float(value)
