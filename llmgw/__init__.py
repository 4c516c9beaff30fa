"""llmgw: composable aiohttp pieces for an LLM gateway in front of Claude Code.

The ready gateway is :func:`make_app`; every piece it wires is importable on its own:
the relay handler, the format surfaces, the middlewares, the providers and the sans-IO
codecs in :mod:`llmgw.wire`. Importing llmgw has no side effects and loads no optional
extra (botocore, google-auth, asyncpg, aiosqlite, PyJWT are imported where used).
"""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import make_app
    from .config import (
        AuditConfig,
        AuthConfig,
        GatewayConfig,
        LimitsConfig,
        MeteringConfig,
        ProviderConfig,
        RouteConfig,
        RoutingConfig,
        ServerConfig,
        StorageConfig,
        UpstreamConfig,
        load_config,
        parse_config,
    )
    from .context import Identity, RequestContext, get_body, get_context, routed
    from .errors import ConfigError, LlmgwError
    from .formats import add_anthropic_routes, add_bedrock_routes, add_vertex_routes
    from .middlewares import (
        audit_middleware,
        auth_middleware,
        errors_middleware,
        limits_middleware,
        metering_middleware,
        routing_middleware,
    )
    from .providers import AnthropicProvider, Provider, build_provider
    from .relay import relay
    from .routes import Deployment, Route, RouteTable
    from .usage import Outcome, Usage

# Resolved on first access (PEP 562): ``import llmgw.wire`` must not pull in aiohttp, and
# ``import llmgw`` stays cheap for a CLI that only needs one subcommand.
_EXPORTS = {
    "AnthropicProvider": ".providers",
    "AuditConfig": ".config",
    "AuthConfig": ".config",
    "ConfigError": ".errors",
    "Deployment": ".routes",
    "GatewayConfig": ".config",
    "Identity": ".context",
    "LimitsConfig": ".config",
    "LlmgwError": ".errors",
    "MeteringConfig": ".config",
    "Outcome": ".usage",
    "Provider": ".providers",
    "ProviderConfig": ".config",
    "RequestContext": ".context",
    "Route": ".routes",
    "RouteConfig": ".config",
    "RouteTable": ".routes",
    "RoutingConfig": ".config",
    "ServerConfig": ".config",
    "StorageConfig": ".config",
    "UpstreamConfig": ".config",
    "Usage": ".usage",
    "add_anthropic_routes": ".formats",
    "add_bedrock_routes": ".formats",
    "add_vertex_routes": ".formats",
    "audit_middleware": ".middlewares",
    "auth_middleware": ".middlewares",
    "build_provider": ".providers",
    "errors_middleware": ".middlewares",
    "get_body": ".context",
    "get_context": ".context",
    "routed": ".context",
    "limits_middleware": ".middlewares",
    "load_config": ".config",
    "make_app": ".app",
    "metering_middleware": ".middlewares",
    "parse_config": ".config",
    "relay": ".relay",
    "routing_middleware": ".middlewares",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmgw' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = (
    "AnthropicProvider",
    "AuditConfig",
    "AuthConfig",
    "ConfigError",
    "Deployment",
    "GatewayConfig",
    "Identity",
    "LimitsConfig",
    "LlmgwError",
    "MeteringConfig",
    "Outcome",
    "Provider",
    "ProviderConfig",
    "RequestContext",
    "Route",
    "RouteConfig",
    "RouteTable",
    "RoutingConfig",
    "ServerConfig",
    "StorageConfig",
    "UpstreamConfig",
    "Usage",
    "__version__",
    "add_anthropic_routes",
    "add_bedrock_routes",
    "add_vertex_routes",
    "audit_middleware",
    "auth_middleware",
    "build_provider",
    "errors_middleware",
    "get_body",
    "get_context",
    "limits_middleware",
    "load_config",
    "make_app",
    "metering_middleware",
    "parse_config",
    "relay",
    "routed",
    "routing_middleware",
)
