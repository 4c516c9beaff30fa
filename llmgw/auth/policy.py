"""The model allow-list check, shared by ``auth_middleware`` and the format handlers.

A denied model is a **400 invalid_request_error**: that is what Claude Code's gateway mode
expects for allow-list denials (PROTOCOLS.md §6a), and it is not retried. Entries are the
model names clients send, exact or as ``fnmatch`` patterns (``claude-haiku-*``).
"""

from __future__ import annotations

import fnmatch

from ..context import Identity, RequestContext
from ..errors import InvalidRequestError

__all__ = ("ensure_model_allowed", "model_allowed")


def model_allowed(identity: Identity | None, model: str) -> bool:
    """No identity or no allow-list means every model."""
    if identity is None or identity.allowed_models is None:
        return True
    allowed = identity.allowed_models
    return model in allowed or any(
        fnmatch.fnmatchcase(model, pattern) for pattern in allowed if "*" in pattern
    )


def ensure_model_allowed(ctx: RequestContext, model: str | None = None) -> None:
    """Raise the 400 unless the caller may use ``model`` (default ``ctx.requested_model``).

    Bedrock and Vertex handlers learn the model inside the handler, after the middlewares:
    they call this once they have set ``ctx.requested_model``.
    """
    model = model if model is not None else ctx.requested_model
    if model is not None and not model_allowed(ctx.identity, model):
        raise InvalidRequestError(
            f"model: {model!r} is not allowed for this API key; ask the gateway operator"
        )
