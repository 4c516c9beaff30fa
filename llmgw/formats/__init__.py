"""The API surfaces a client can speak to the gateway."""

from .anthropic import add_anthropic_routes, anthropic_app

__all__ = ("add_anthropic_routes", "anthropic_app")
