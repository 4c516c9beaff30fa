"""Middlewares, each usable alone in any ``web.Application``."""

from .errors import errors_middleware

__all__ = ("errors_middleware",)
