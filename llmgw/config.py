"""Gateway configuration: frozen dataclasses and one loader with path-precise errors.

Secrets never live in the file: a provider names the environment variable that holds its
key (``api_key_env``), and nothing here writes a secret back or logs it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .limits.policy import LimitSet, Tier, parse_limit_sets

__all__ = (
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

PROVIDER_KINDS = ("anthropic", "bedrock", "vertex")
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
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
class MeteringConfig:
    """Usage records (on by default): where they go and how the off-path writer batches."""

    enabled: bool = True
    #: ``sql`` (the database at ``storage.url``) or ``memory`` (lost on restart).
    store: str = "sql"
    #: Crash journal: ``auto`` (beside a SQLite file; none for PostgreSQL or in-memory
    #: databases: set a per-instance path there), ``off``, or a file path.
    journal: str = "auto"
    queue_size: int = 10_000
    batch_size: int = 500
    #: Longest a record waits in the queue before its batch is written (seconds).
    flush_interval: float = 0.1
    #: When the queue is full: ``block`` the request until there is room, or ``spill`` to a
    #: file beside the journal. Never drop.
    on_full: str = "block"


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceOverride:
    """``[pricing."model-prefix"]``: USD per million tokens as exact decimal strings.

    Unset cache prices follow Anthropic's multipliers of ``input`` (1.25x, 2x, 0.1x).
    """

    prefix: str
    input: str
    output: str
    cache_write_5m: str | None = None
    cache_write_1h: str | None = None
    cache_read: str | None = None
    long_context_input: str | None = None
    long_context_output: str | None = None
    long_context_threshold: int = 200_000


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticKeyConfig:
    """A key from the config file, for setups without a key store.

    The file holds only ``sha256`` (hex digest of the key: ``printf %s "$KEY" | sha256sum``)
    or ``key_env`` (the environment variable holding the key), never the key itself.
    """

    id: str
    sha256: str | None = None
    key_env: str | None = None
    user: str | None = None
    team: str | None = None
    project: str | None = None
    allowed_models: tuple[str, ...] | None = None
    limits: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtConfig:
    """Bearer JWTs (extra ``jwt``): HS* with ``secret_env``, RS*/ES* with a JWKS."""

    issuer: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    secret_env: str | None = None
    jwks_url: str | None = None
    jwks_file: str | None = None
    #: Seconds of clock skew tolerated on ``exp``/``nbf``.
    leeway: float = 30.0
    #: Least time between two JWKS fetches triggered by an unknown ``kid``.
    jwks_refresh_interval: float = 60.0
    #: Bound on one JWKS fetch (connect + read): an unreachable identity provider costs a
    #: request at most this long, and cached keys keep working meanwhile.
    jwks_timeout: float = 5.0
    #: Keys older than this are refetched on next use, so a key removed from the JWKS stops
    #: verifying within about this long (a failed refetch keeps the cached keys).
    jwks_max_age: float = 3600.0
    user_claim: str = "sub"
    team_claim: str | None = None
    project_claim: str | None = None
    #: A claim holding a list of allowed models; absent means no restriction.
    models_claim: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """Client authentication and the admin credential (feature off by default)."""

    enabled: bool = False
    #: Virtual keys in the SQL database at ``storage.url``.
    store: bool = True
    #: Environment variable with the server secret keys are HMAC'd with.
    key_secret_env: str = "LLMGW_KEY_SECRET"
    #: Environment variable with the admin API credential; unset = no admin API.
    admin_key_env: str = "LLMGW_ADMIN_KEY"
    #: Upper bound on how long a revoke or update takes to reach every instance.
    cache_ttl: float = 5.0
    cache_size: int = 10_000
    #: Failed attempts per client address within ``failure_window`` before a 429.
    max_failures: int = 20
    failure_window: float = 60.0
    static_keys: tuple[StaticKeyConfig, ...] = ()
    jwt: JwtConfig | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditCaptureConfig:
    """Request/response body capture: off unless ``all`` or a model or identity matches."""

    all: bool = False
    #: ``fnmatch`` patterns on the requested or routed model.
    models: tuple[str, ...] = ()
    #: Key ids, users or teams whose bodies are captured.
    identities: tuple[str, ...] = ()
    #: Bytes kept per body; the rest is counted, not stored.
    max_bytes: int = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditConfig:
    """The audit log (``llmgw.audit``): one hash-chained record per request and admin change.

    On by default (batched, into ``storage.url``): the ready gateway audits unless told not
    to (``enabled = false``)."""

    enabled: bool = True
    #: ``sync`` (start record before the upstream call) or ``batched`` (off the request path).
    mode: str = "batched"
    #: ``database`` (``url``, else ``storage.url``) or ``jsonl`` (``path``).
    sink: str = "database"
    url: str | None = None
    path: str | None = None
    #: JSON Lines only: ``always``, ``interval`` or ``never``.
    fsync: str = "interval"
    fsync_interval: float = 1.0
    #: Batched mode: the most a crash can lose is this many seconds of records.
    flush_interval: float = 1.0
    max_batch: int = 1000
    #: This instance's chain; ``None`` is ``host:port`` (``host:pid`` on port 0), so
    #: instances sharing a database never share a chain. Give every instance its own.
    chain: str | None = None
    #: Environment variable holding the HMAC key that signs every record.
    hmac_key_env: str | None = None
    #: Extra redactions on top of secrets (always): ``email``, ``phone``, ``ipv4``,
    #: ``credit_card`` or a regular expression.
    redact_patterns: tuple[str, ...] = ()
    capture: AuditCaptureConfig = field(default_factory=AuditCaptureConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    """Rate limits and budgets (off unless a ``[limits]`` table is present).

    ``defaults`` hold one limit set per tier (``global``, ``key``, ``user``, ``team``,
    ``project``, ``session``), each applied separately to every key, user...;
    per-entity overrides are set through the admin API or on the key itself.
    """

    enabled: bool = False
    #: ``memory`` (one process) or ``redis`` (shared, at ``storage.redis_url``).
    backend: str = "memory"
    #: When Redis is unreachable: ``fail_closed`` refuses (503), ``fail_open`` allows and
    #: counts in this process.
    failure_mode: str = "fail_closed"
    key_prefix: str = "llmgw:limits:"
    #: Redis socket timeout (seconds): the most a dead Redis adds to a request.
    redis_timeout: float = 0.25
    #: Longest a concurrent-stream slot is held if its gateway dies without releasing it.
    stream_lease: float = 3600.0
    #: Body bytes per input token when bounding a reservation; 1 is a strict bound.
    input_bytes_per_token: float = 1.0
    defaults: Mapping[Tier, LimitSet] = field(default_factory=dict)
    #: Seconds between checks for limit sets changed elsewhere (admin API of another
    #: instance, ``llmgw limits``): the most a change takes to reach every instance.
    policy_ttl: float = 5.0


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
    root = _Section(data, "")
    server = root.section("server")
    upstream = root.section("upstream")
    storage = root.section("storage")
    metering = _metering(root.section("metering"))
    pricing = tuple(
        _price(prefix, _Section(raw, f'pricing."{prefix}"'))
        for prefix, raw in root.table("pricing").items()
    )
    auth = _auth(root.section("auth"))
    routing = _routing(root.section("routing"))
    audit = _audit(root.section("audit"))
    limits = _limits(root.section("limits"), "limits" in data)
    providers = tuple(
        _provider(name, _Section(raw, f"providers.{name}"))
        for name, raw in root.table("providers").items()
    )
    known = {p.name for p in providers}
    routes = tuple(
        _route(_Section(raw, f"routes[{i}]"), known) for i, raw in enumerate(root.array("routes"))
    )
    cfg = GatewayConfig(
        server=ServerConfig(
            host=server.get_str("host", "127.0.0.1"),
            port=server.get_int("port", 8080),
            client_max_size=server.get_int("client_max_size", 32 * 1024 * 1024),
            anthropic_prefixes=server.str_tuple("anthropic_prefixes"),
            backlog=server.get_int("backlog", 1024),
            bedrock_prefixes=(
                server.str_tuple("bedrock_prefixes")
                if "bedrock_prefixes" in server.data
                else ("", "/bedrock")
            ),
            vertex=server.get_bool("vertex", True),
        ),
        upstream=UpstreamConfig(
            connect_timeout=upstream.get_float("connect_timeout", 10.0),
            first_byte_timeout=upstream.get_float("first_byte_timeout", 600.0),
            idle_timeout=upstream.get_float("idle_timeout", 300.0),
            pool_size=upstream.get_int("pool_size", 1000),
            disconnect_poll_interval=upstream.get_float("disconnect_poll_interval", 0.25),
            ping_interval=upstream.get_float("ping_interval", 10.0),
        ),
        storage=StorageConfig(
            url=storage.get_str("url", "sqlite:///llmgw.db"),
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


def _limits(sec: _Section, present: bool) -> LimitsConfig:
    d = LimitsConfig()
    cfg = LimitsConfig(
        enabled=sec.get_bool("enabled", present),
        backend=sec.get_str("backend", d.backend),
        failure_mode=sec.get_str("failure_mode", d.failure_mode),
        key_prefix=sec.get_str("key_prefix", d.key_prefix),
        redis_timeout=sec.get_float("redis_timeout", d.redis_timeout),
        stream_lease=sec.get_float("stream_lease", d.stream_lease),
        input_bytes_per_token=sec.get_float("input_bytes_per_token", d.input_bytes_per_token),
        defaults=parse_limit_sets(sec.table("defaults"), sec.path("defaults")),
        policy_ttl=sec.get_float("policy_ttl", d.policy_ttl),
    )
    if cfg.backend not in ("memory", "redis"):
        raise ConfigError(f"{sec.path('backend')}: expected 'memory' or 'redis'")
    if cfg.failure_mode not in ("fail_closed", "fail_open"):
        raise ConfigError(f"{sec.path('failure_mode')}: expected 'fail_closed' or 'fail_open'")
    for name in ("redis_timeout", "stream_lease", "input_bytes_per_token"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{sec.path(name)}: must be positive")
    if cfg.policy_ttl < 0:
        raise ConfigError(f"{sec.path('policy_ttl')}: must not be negative")
    sec.done()
    return cfg


def _metering(sec: _Section) -> MeteringConfig:
    cfg = MeteringConfig(
        enabled=sec.get_bool("enabled", True),
        store=sec.get_str("store", "sql"),
        journal=sec.get_str("journal", "auto"),
        queue_size=sec.get_int("queue_size", 10_000),
        batch_size=sec.get_int("batch_size", 500),
        flush_interval=sec.get_float("flush_interval", 0.1),
        on_full=sec.get_str("on_full", "block"),
    )
    if cfg.store not in ("sql", "memory"):
        raise ConfigError(f"{sec.path('store')}: expected 'sql' or 'memory'")
    if cfg.on_full not in ("block", "spill"):
        raise ConfigError(f"{sec.path('on_full')}: expected 'block' or 'spill'")
    for key in ("queue_size", "batch_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{sec.path(key)}: must be at least 1")
    if cfg.flush_interval <= 0:
        raise ConfigError(f"{sec.path('flush_interval')}: must be positive")
    if cfg.on_full == "spill" and cfg.journal == "off":
        raise ConfigError(f"{sec.path('on_full')}: 'spill' needs a journal (the spill file)")
    sec.done()
    return cfg


def _price_str(sec: _Section, key: str, *, required: bool = False) -> str | None:
    value = sec._get(key, _MISSING if required else None, (int, float, str), "a number")
    if value is None:
        return None
    # str() of a TOML float is its shortest exact spelling (0.3 -> "0.3"), so prices stay exact.
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"{sec.path(key)}: expected a number, got {text!r}") from None
    if not number >= 0:
        raise ConfigError(f"{sec.path(key)}: must be a non-negative number")
    return text


def _price(prefix: str, sec: _Section) -> PriceOverride:
    price = PriceOverride(
        prefix=prefix,
        input=_price_str(sec, "input", required=True) or "0",
        output=_price_str(sec, "output", required=True) or "0",
        cache_write_5m=_price_str(sec, "cache_write_5m"),
        cache_write_1h=_price_str(sec, "cache_write_1h"),
        cache_read=_price_str(sec, "cache_read"),
        long_context_input=_price_str(sec, "long_context_input"),
        long_context_output=_price_str(sec, "long_context_output"),
        long_context_threshold=sec.get_int("long_context_threshold", 200_000),
    )
    if (price.long_context_input is None) != (price.long_context_output is None):
        raise ConfigError(
            f"{sec.path('long_context_input')}: set both long_context_input and "
            "long_context_output, or neither"
        )
    sec.done()
    return price


def _provider(name: str, sec: _Section) -> ProviderConfig:
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


def _strategy(sec: _Section, default: str | None) -> Any:
    strategy = sec.get_str("strategy", default)
    if strategy is not None and strategy not in ROUTING_STRATEGIES:
        choices = ", ".join(ROUTING_STRATEGIES)
        raise ConfigError(f"{sec.path('strategy')}: unknown strategy {strategy!r} ({choices})")
    return strategy


def _non_negative(sec: _Section, key: str, value: Any) -> Any:
    if value is not None and value < 0:
        raise ConfigError(f"{sec.path(key)}: must not be negative")
    return value


def _routing(sec: _Section) -> RoutingConfig:
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


def _timeouts(sec: _Section) -> RouteTimeouts:
    def opt(key: str) -> float | None:
        value = sec.get_float(key, None) if key in sec.data else None
        if value is not None and value <= 0:
            raise ConfigError(f"{sec.path(key)}: must be positive")
        sec.seen.add(key)
        return value

    timeouts = RouteTimeouts(connect=opt("connect"), first_byte=opt("first_byte"), idle=opt("idle"))
    sec.done()
    return timeouts


def _auth(sec: _Section) -> AuthConfig:
    d = AuthConfig()
    static = []
    for i, raw in enumerate(sec.array("static_keys")):
        key = _Section(raw, f"{sec.path('static_keys')}[{i}]")
        item = StaticKeyConfig(
            id=key.get_str("id"),
            sha256=key.opt_str("sha256"),
            key_env=key.opt_str("key_env"),
            user=key.opt_str("user"),
            team=key.opt_str("team"),
            project=key.opt_str("project"),
            allowed_models=(
                key.str_tuple("allowed_models") if "allowed_models" in key.data else None
            ),
            limits=dict(key.table("limits")),
        )
        if (item.sha256 is None) == (item.key_env is None):
            raise ConfigError(f"{key.path('sha256')}: give exactly one of sha256 or key_env")
        if item.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", item.sha256):
            raise ConfigError(f"{key.path('sha256')}: expected 64 lowercase hex digits")
        key.done()
        static.append(item)
    jwt = None
    if "jwt" in sec.data:
        j = sec.section("jwt")
        jd = JwtConfig(issuer="", audience="")
        jwt = JwtConfig(
            issuer=j.get_str("issuer"),
            audience=j.get_str("audience"),
            algorithms=j.str_tuple("algorithms") or jd.algorithms,
            secret_env=j.opt_str("secret_env"),
            jwks_url=j.opt_str("jwks_url"),
            jwks_file=j.opt_str("jwks_file"),
            leeway=j.get_float("leeway", jd.leeway),
            jwks_refresh_interval=j.get_float("jwks_refresh_interval", jd.jwks_refresh_interval),
            jwks_timeout=j.get_float("jwks_timeout", jd.jwks_timeout),
            jwks_max_age=j.get_float("jwks_max_age", jd.jwks_max_age),
            user_claim=j.get_str("user_claim", jd.user_claim),
            team_claim=j.opt_str("team_claim"),
            project_claim=j.opt_str("project_claim"),
            models_claim=j.opt_str("models_claim"),
        )
        for name in ("jwks_timeout", "jwks_max_age"):
            if getattr(jwt, name) <= 0:
                raise ConfigError(f"{j.path(name)}: must be > 0")
        for alg in jwt.algorithms:
            if alg not in JWT_ALGORITHMS:
                raise ConfigError(f"{j.path('algorithms')}: unsupported algorithm {alg!r}")
        if any(a.startswith("HS") for a in jwt.algorithms) and jwt.secret_env is None:
            raise ConfigError(f"{j.path('secret_env')}: required for HS* algorithms")
        asymmetric = any(not a.startswith("HS") for a in jwt.algorithms)
        if asymmetric and (jwt.jwks_url is None) == (jwt.jwks_file is None):
            raise ConfigError(f"{j.path('jwks_url')}: give exactly one of jwks_url or jwks_file")
        j.done()
    cfg = AuthConfig(
        enabled=sec.get_bool("enabled", d.enabled),
        store=sec.get_bool("store", d.store),
        key_secret_env=sec.get_str("key_secret_env", d.key_secret_env),
        admin_key_env=sec.get_str("admin_key_env", d.admin_key_env),
        cache_ttl=sec.get_float("cache_ttl", d.cache_ttl),
        cache_size=sec.get_int("cache_size", d.cache_size),
        max_failures=sec.get_int("max_failures", d.max_failures),
        failure_window=sec.get_float("failure_window", d.failure_window),
        static_keys=tuple(static),
        jwt=jwt,
    )
    for name in ("cache_ttl", "failure_window"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{sec.path(name)}: must not be negative")
    for name in ("cache_size", "max_failures"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{sec.path(name)}: must be at least 1")
    sec.done()
    return cfg


def _route(sec: _Section, known: set[str]) -> RouteConfig:
    deployments = []
    for i, raw in enumerate(sec.array("deployments")):
        dep = _Section(raw, f"{sec.prefix}.deployments[{i}]")
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


_MISSING: Any = object()


class _Section:
    """A mapping being validated; remembers its path and which keys were read."""

    def __init__(self, data: Any, prefix: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{prefix or '<root>'}: expected a table")
        self.data: Mapping[str, Any] = data
        self.prefix = prefix
        self.seen: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def _get(self, key: str, default: Any, kinds: tuple[type, ...], what: str) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise ConfigError(f"{self.path(key)}: required")
            return default
        value = self.data[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"{self.path(key)}: expected {what}, got {type(value).__name__}")
        return value

    def get_str(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, default, (str,), "a string")

    def opt_str(self, key: str) -> str | None:
        value: str | None = self._get(key, None, (str,), "a string")
        return value

    def get_int(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, default, (int,), "an integer")

    def opt_int(self, key: str) -> int | None:
        value: int | None = self._get(key, None, (int,), "an integer")
        return value

    def get_float(self, key: str, default: Any = _MISSING) -> Any:
        return float(self._get(key, default, (int, float), "a number"))

    def get_bool(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, default, (bool,), "true or false")

    def str_tuple(self, key: str) -> tuple[str, ...]:
        values = self._get(key, [], (list,), "a list of strings")
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise ConfigError(f"{self.path(key)}[{i}]: expected a string")
        return tuple(values)

    def section(self, key: str) -> _Section:
        return _Section(self._get(key, {}, (Mapping,), "a table"), self.path(key))

    def table(self, key: str) -> Mapping[str, Any]:
        value: Mapping[str, Any] = self._get(key, {}, (Mapping,), "a table")
        return value

    def array(self, key: str) -> list[Any]:
        value: list[Any] = self._get(key, [], (list,), "an array of tables")
        return value

    def rest(self) -> dict[str, Any]:
        """Keys not read yet (provider options); marks them read."""
        out = {k: v for k, v in self.data.items() if k not in self.seen}
        self.seen.update(out)
        return out

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"{self.path(unknown[0])}: unknown key")


def _audit(sec: _Section) -> AuditConfig:
    d = AuditConfig()
    cap = sec.section("capture")
    capture = AuditCaptureConfig(
        all=cap.get_bool("all", False),
        models=cap.str_tuple("models"),
        identities=cap.str_tuple("identities"),
        max_bytes=cap.get_int("max_bytes", d.capture.max_bytes),
    )
    cap.done()
    cfg = AuditConfig(
        enabled=sec.get_bool("enabled", d.enabled),
        mode=sec.get_str("mode", d.mode),
        sink=sec.get_str("sink", d.sink),
        url=sec.opt_str("url"),
        path=sec.opt_str("path"),
        fsync=sec.get_str("fsync", d.fsync),
        fsync_interval=sec.get_float("fsync_interval", d.fsync_interval),
        flush_interval=sec.get_float("flush_interval", d.flush_interval),
        max_batch=sec.get_int("max_batch", d.max_batch),
        chain=sec.opt_str("chain"),
        hmac_key_env=sec.opt_str("hmac_key_env"),
        redact_patterns=sec.str_tuple("redact_patterns"),
        capture=capture,
    )
    for name, value, allowed in (
        ("mode", cfg.mode, ("sync", "batched")),
        ("sink", cfg.sink, ("database", "jsonl")),
        ("fsync", cfg.fsync, ("always", "interval", "never")),
    ):
        if value not in allowed:
            raise ConfigError(f"{sec.path(name)}: expected one of {', '.join(allowed)}")
    if cfg.sink == "jsonl" and not cfg.path:
        raise ConfigError(f"{sec.path('path')}: required when sink is jsonl")
    if cfg.flush_interval <= 0 or cfg.max_batch < 1 or capture.max_bytes < 0:
        raise ConfigError(
            f"{sec.path('flush_interval')}: flush_interval and max_batch must be positive"
        )
    sec.done()
    return cfg
