"""The API surfaces a client can speak to the gateway."""

from .anthropic import add_anthropic_routes, anthropic_app
from .bedrock import add_bedrock_routes, bedrock_app
from .vertex import add_vertex_routes

__all__ = (
    "add_anthropic_routes",
    "add_bedrock_routes",
    "add_vertex_routes",
    "anthropic_app",
    "bedrock_app",
)
