"""Middlewares, each usable alone in any ``web.Application``."""

from .audit import audit_middleware
from .auth import auth_middleware
from .errors import errors_middleware
from .limits import limits_middleware
from .metering import metering_middleware
from .routing import routing_middleware

__all__ = (
    "audit_middleware",
    "auth_middleware",
    "errors_middleware",
    "limits_middleware",
    "metering_middleware",
    "routing_middleware",
)
