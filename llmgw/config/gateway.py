"""Gateway configuration: frozen dataclasses and one loader with path-precise errors.

Secrets never live in the file: a provider names the environment variable that holds its
key (``api_key_env``), and nothing here writes a secret back or logs it. The feature
sections (auth, metering, pricing, audit, limits) live in :mod:`llmgw.config.features`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._section import Section
from .auth import AuthConfig, parse_auth
from .features import (
    AuditConfig,
    LimitsConfig,
    MeteringConfig,
    PriceOverride,
    parse_audit,
    parse_limits,
    parse_metering,
    parse_price,
)

__all__ = (
    "PROVIDER_KINDS",
    "ROUTING_STRATEGIES",
    "DeploymentConfig",
    "GatewayConfig",
    "ProviderConfig",
    "RouteConfig",
    "RouteTimeouts",
    "RoutingConfig",
    "ServerConfig",
    "StorageConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
)

PROVIDER_KINDS = ("anthropic", "bedrock", "vertex")
ROUTING_STRATEGIES = ("weighted", "least_inflight", "latency")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    #: Largest request body accepted; Anthropic's own edge limit is 32 MB (images, PDFs).
    client_max_size: int = 32 * 1024 * 1024
    #: Extra path prefixes the Anthropic surface is also mounted under (``/anthropic``).
    anthropic_prefixes: tuple[str, ...] = ()
    #: Listen backlog: a burst of new agent connections must not overflow the accept
    #: queue (aiohttp's default of 128 makes some connects retry after a second).
    backlog: int = 1024
    #: Where the Bedrock surface (``/model/{id}/invoke``...) is mounted; ``""`` is the root.
    bedrock_prefixes: tuple[str, ...] = ("", "/bedrock")
    #: Serve the Vertex surface (``.../projects/{p}/.../models/{m}:rawPredict``) under any
    #: prefix (``/vertex/v1/projects/...``, ``/v1/projects/...``).
    vertex: bool = True
    #: The young-generation threshold of Python's cyclic GC under ``llmgw serve`` (Python's
    #: default is 700; ``0`` leaves it). With hundreds of requests in flight the default
    #: collects every few requests and rescans the survivors: ~15 % of the gateway's CPU
    #: in the relay benchmark, ~4 % at 10,000. ``serve`` also freezes the startup heap.
    gc_threshold: int = 10_000
    #: Under ``llmgw serve``, give the memory of released large request bodies back to the
    #: OS (glibc ``malloc_trim``, at most twice a second): 300 streams of 100 KB bodies
    #: opened at once measured 30 KB of RSS per open stream with it, 122-128 KB without.
    malloc_trim: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    """Timeouts for upstream calls. There is deliberately no total timeout: streams are long."""

    connect_timeout: float = 10.0
    #: Until the upstream's status line; a non-streaming 64k-token answer takes minutes.
    first_byte_timeout: float = 600.0
    #: Longest silence between two chunks (Anthropic pings well within this).
    idle_timeout: float = 300.0
    #: Connections in the shared pool; every open stream holds one.
    pool_size: int = 1000
    #: How often a silent upstream wait checks whether the client is still there.
    disconnect_poll_interval: float = 0.25
    #: Silence after which a translated stream (Bedrock → SSE) gets a ``ping`` event; well
    #: under Claude Code's 300 s byte watchdog.
    ping_interval: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str | None = None
    #: Environment variable holding the provider's key (never the key itself).
    api_key_env: str | None = None
    #: Provider-specific settings (region, project, credentials file...).
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentConfig:
    provider: str
    model: str | None = None
    weight: float = 1.0
    max_concurrency: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteTimeouts:
    """Per-route upstream timeouts in seconds; ``None`` keeps the ``[upstream]`` value."""

    connect: float | None = None
    first_byte: float | None = None
    idle: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteConfig:
    model: str
    deployments: tuple[DeploymentConfig, ...]
    aliases: tuple[str, ...] = ()
    display_name: str | None = None
    #: ``None`` fields take the ``[routing]`` default.
    strategy: str | None = None
    failover: bool | None = None
    retries: int | None = None
    cooldown: float | None = None
    timeouts: RouteTimeouts = field(default_factory=RouteTimeouts)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingConfig:
    """Defaults for every route, and the retry and circuit-breaker tuning."""

    strategy: str = "weighted"
    failover: bool = True
    #: Extra attempts after every deployment of a route was tried once. Off by default:
    #: Claude Code and the SDKs retry themselves, and retries would multiply.
    retries: int = 0
    #: Exponential backoff with full jitter between retries: ``base * 2**n``, capped.
    backoff_base: float = 0.25
    backoff_max: float = 8.0
    #: A ``retry-after`` longer than this is not waited out: the error goes to the client.
    max_retry_after: float = 10.0
    #: Consecutive failures that take a deployment out for ``cooldown`` seconds.
    failure_threshold: int = 3
    cooldown: float = 30.0
    #: Weight of the newest sample in the time-to-first-byte average (``latency`` strategy).
    ewma_alpha: float = 0.3


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    """Where keys, usage and audit records live; one SQL database for all three."""

    #: ``sqlite:///llmgw.db`` (relative), ``sqlite:////abs.db``, ``postgresql://...``.
    url: str = "sqlite:///llmgw.db"
    #: Shared counters for limits across instances; ``None`` keeps them in memory.
    redis_url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    metering: MeteringConfig = field(default_factory=MeteringConfig)
    pricing: tuple[PriceOverride, ...] = ()
    providers: tuple[ProviderConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    auth: AuthConfig = field(default_factory=AuthConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)


def load_config(path: str | Path) -> GatewayConfig:
    """Read a TOML (or ``.json``) file and validate it eagerly."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse_config(data)


def parse_config(data: Mapping[str, Any]) -> GatewayConfig:
    """Validate a parsed config mapping; errors name the key path (``routes[2].provider``)."""
    root = Section(data, "")
    server = root.section("server")
    upstream = root.section("upstream")
    storage = root.section("storage")
    metering = parse_metering(root.section("metering"))
    pricing = tuple(
        parse_price(prefix, Section(raw, f'pricing."{prefix}"'))
        for prefix, raw in root.table("pricing").items()
    )
    auth = parse_auth(root.section("auth"))
    routing = _routing(root.section("routing"))
    audit = parse_audit(root.section("audit"))
    limits = parse_limits(root.section("limits"), "limits" in data)
    providers = tuple(
        _provider(name, Section(raw, f"providers.{name}"))
        for name, raw in root.table("providers").items()
    )
    known = {p.name for p in providers}
    routes = tuple(
        _route(Section(raw, f"routes[{i}]"), known) for i, raw in enumerate(root.array("routes"))
    )
    dserver, dup, dstore = ServerConfig(), UpstreamConfig(), StorageConfig()
    cfg = GatewayConfig(
        server=ServerConfig(
            host=server.get_str("host", dserver.host),
            port=server.get_int("port", dserver.port),
            client_max_size=server.get_int("client_max_size", dserver.client_max_size),
            anthropic_prefixes=server.str_tuple("anthropic_prefixes"),
            backlog=server.get_int("backlog", dserver.backlog),
            bedrock_prefixes=(
                server.str_tuple("bedrock_prefixes")
                if "bedrock_prefixes" in server.data
                else dserver.bedrock_prefixes
            ),
            vertex=server.get_bool("vertex", dserver.vertex),
            gc_threshold=server.get_int("gc_threshold", dserver.gc_threshold),
            malloc_trim=server.get_bool("malloc_trim", dserver.malloc_trim),
        ),
        upstream=UpstreamConfig(
            connect_timeout=upstream.get_float("connect_timeout", dup.connect_timeout),
            first_byte_timeout=upstream.get_float("first_byte_timeout", dup.first_byte_timeout),
            idle_timeout=upstream.get_float("idle_timeout", dup.idle_timeout),
            pool_size=upstream.get_int("pool_size", dup.pool_size),
            disconnect_poll_interval=upstream.get_float(
                "disconnect_poll_interval", dup.disconnect_poll_interval
            ),
            ping_interval=upstream.get_float("ping_interval", dup.ping_interval),
        ),
        storage=StorageConfig(
            url=storage.get_str("url", dstore.url),
            redis_url=storage.opt_str("redis_url"),
        ),
        providers=providers,
        routes=routes,
        metering=metering,
        pricing=pricing,
        auth=auth,
        routing=routing,
        audit=audit,
        limits=limits,
    )
    if limits.enabled and limits.backend == "redis" and cfg.storage.redis_url is None:
        raise ConfigError("limits.backend: 'redis' needs storage.redis_url")
    server.done()
    upstream.done()
    storage.done()
    root.done()
    return cfg


def _provider(name: str, sec: Section) -> ProviderConfig:
    kind = sec.get_str("kind", name if name in PROVIDER_KINDS else None)
    if kind not in PROVIDER_KINDS:
        raise ConfigError(f"{sec.path('kind')}: unknown provider kind {kind!r}")
    cfg = ProviderConfig(
        name=name,
        kind=kind,
        base_url=sec.opt_str("base_url"),
        api_key_env=sec.opt_str("api_key_env"),
        options=sec.rest(),
    )
    return cfg


def _strategy(sec: Section, default: str | None) -> Any:
    strategy = sec.get_str("strategy", default)
    if strategy is not None and strategy not in ROUTING_STRATEGIES:
        choices = ", ".join(ROUTING_STRATEGIES)
        raise ConfigError(f"{sec.path('strategy')}: unknown strategy {strategy!r} ({choices})")
    return strategy


def _non_negative(sec: Section, key: str, value: Any) -> Any:
    if value is not None and value < 0:
        raise ConfigError(f"{sec.path(key)}: must not be negative")
    return value


def _routing(sec: Section) -> RoutingConfig:
    d = RoutingConfig()
    cfg = RoutingConfig(
        strategy=_strategy(sec, d.strategy),
        failover=sec.get_bool("failover", d.failover),
        retries=_non_negative(sec, "retries", sec.get_int("retries", d.retries)),
        backoff_base=_non_negative(
            sec, "backoff_base", sec.get_float("backoff_base", d.backoff_base)
        ),
        backoff_max=_non_negative(sec, "backoff_max", sec.get_float("backoff_max", d.backoff_max)),
        max_retry_after=_non_negative(
            sec, "max_retry_after", sec.get_float("max_retry_after", d.max_retry_after)
        ),
        failure_threshold=sec.get_int("failure_threshold", d.failure_threshold),
        cooldown=_non_negative(sec, "cooldown", sec.get_float("cooldown", d.cooldown)),
        ewma_alpha=sec.get_float("ewma_alpha", d.ewma_alpha),
    )
    if cfg.failure_threshold < 1:
        raise ConfigError(f"{sec.path('failure_threshold')}: must be at least 1")
    if not 0 < cfg.ewma_alpha <= 1:
        raise ConfigError(f"{sec.path('ewma_alpha')}: must be in (0, 1]")
    sec.done()
    return cfg


def _timeouts(sec: Section) -> RouteTimeouts:
    def opt(key: str) -> float | None:
        value = sec.get_float(key, None) if key in sec.data else None
        if value is not None and value <= 0:
            raise ConfigError(f"{sec.path(key)}: must be positive")
        sec.seen.add(key)
        return value

    timeouts = RouteTimeouts(connect=opt("connect"), first_byte=opt("first_byte"), idle=opt("idle"))
    sec.done()
    return timeouts


def _route(sec: Section, known: set[str]) -> RouteConfig:
    deployments = []
    for i, raw in enumerate(sec.array("deployments")):
        dep = Section(raw, f"{sec.prefix}.deployments[{i}]")
        provider = dep.get_str("provider")
        if provider not in known:
            raise ConfigError(f"{dep.path('provider')}: unknown provider {provider!r}")
        deployments.append(
            DeploymentConfig(
                provider=provider,
                model=dep.opt_str("model"),
                weight=dep.get_float("weight", 1.0),
                max_concurrency=dep.opt_int("max_concurrency"),
            )
        )
        dep.done()
    if not deployments:
        raise ConfigError(f"{sec.path('deployments')}: a route needs at least one deployment")
    route = RouteConfig(
        model=sec.get_str("model"),
        deployments=tuple(deployments),
        aliases=sec.str_tuple("aliases"),
        display_name=sec.opt_str("display_name"),
        strategy=_strategy(sec, None),
        failover=sec.get_bool("failover", None),
        retries=_non_negative(sec, "retries", sec.opt_int("retries")),
        cooldown=_non_negative(
            sec, "cooldown", sec.get_float("cooldown", None) if "cooldown" in sec.data else None
        ),
        timeouts=_timeouts(sec.section("timeouts")),
    )
    sec.done()
    return route
