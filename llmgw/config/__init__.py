"""Gateway configuration: frozen dataclasses, ``load_config`` and ``parse_config``."""

from .auth import JWT_ALGORITHMS, AuthConfig, JwtConfig, StaticKeyConfig
from .features import (
    AuditCaptureConfig,
    AuditConfig,
    LimitsConfig,
    MeteringConfig,
    PriceOverride,
)
from .gateway import (
    PROVIDER_KINDS,
    ROUTING_STRATEGIES,
    DeploymentConfig,
    GatewayConfig,
    ProviderConfig,
    RouteConfig,
    RouteTimeouts,
    RoutingConfig,
    ServerConfig,
    StorageConfig,
    UpstreamConfig,
    load_config,
    parse_config,
)

__all__ = (
    "JWT_ALGORITHMS",
    "PROVIDER_KINDS",
    "ROUTING_STRATEGIES",
    "AuditCaptureConfig",
    "AuditConfig",
    "AuthConfig",
    "DeploymentConfig",
    "GatewayConfig",
    "JwtConfig",
    "LimitsConfig",
    "MeteringConfig",
    "PriceOverride",
    "ProviderConfig",
    "RouteConfig",
    "RouteTimeouts",
    "RoutingConfig",
    "ServerConfig",
    "StaticKeyConfig",
    "StorageConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
)
