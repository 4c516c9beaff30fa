"""Config sections of the optional features: metering and pricing, audit, limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..limits.policy import LimitSet, Tier, parse_limit_sets
from ._section import MISSING, Section

__all__ = (
    "AuditCaptureConfig",
    "AuditConfig",
    "LimitsConfig",
    "MeteringConfig",
    "PriceOverride",
    "parse_audit",
    "parse_limits",
    "parse_metering",
    "parse_price",
)


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
    #: Redis backend: lease this share of each limit to the instance at a time
    #: (:mod:`llmgw.limits.leased`), so most requests are charged without a round trip;
    #: 0 (the default) charges every request in Redis.
    lease_fraction: float = 0.0
    #: Seconds an instance keeps a leased allowance before giving back what is left.
    lease_hold: float = 1.0
    #: Longest a concurrent-stream slot is held if its gateway dies without releasing it.
    stream_lease: float = 3600.0
    #: Body bytes per input token when bounding a reservation; 1 is a strict bound.
    input_bytes_per_token: float = 1.0
    defaults: Mapping[Tier, LimitSet] = field(default_factory=dict)
    #: Seconds between checks for limit sets changed elsewhere (admin API of another
    #: instance, ``llmgw limits``): the most a change takes to reach every instance.
    policy_ttl: float = 5.0


def parse_metering(sec: Section) -> MeteringConfig:
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


def _price_str(sec: Section, key: str, *, required: bool = False) -> str | None:
    value = sec._get(key, MISSING if required else None, (int, float, str), "a number")
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


def parse_price(prefix: str, sec: Section) -> PriceOverride:
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


def parse_audit(sec: Section) -> AuditConfig:
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


def parse_limits(sec: Section, present: bool) -> LimitsConfig:
    d = LimitsConfig()
    cfg = LimitsConfig(
        enabled=sec.get_bool("enabled", present),
        backend=sec.get_str("backend", d.backend),
        failure_mode=sec.get_str("failure_mode", d.failure_mode),
        key_prefix=sec.get_str("key_prefix", d.key_prefix),
        redis_timeout=sec.get_float("redis_timeout", d.redis_timeout),
        lease_fraction=sec.get_float("lease_fraction", d.lease_fraction),
        lease_hold=sec.get_float("lease_hold", d.lease_hold),
        stream_lease=sec.get_float("stream_lease", d.stream_lease),
        input_bytes_per_token=sec.get_float("input_bytes_per_token", d.input_bytes_per_token),
        defaults=parse_limit_sets(sec.table("defaults"), sec.path("defaults")),
        policy_ttl=sec.get_float("policy_ttl", d.policy_ttl),
    )
    if cfg.backend not in ("memory", "redis"):
        raise ConfigError(f"{sec.path('backend')}: expected 'memory' or 'redis'")
    if cfg.failure_mode not in ("fail_closed", "fail_open"):
        raise ConfigError(f"{sec.path('failure_mode')}: expected 'fail_closed' or 'fail_open'")
    if not 0 <= cfg.lease_fraction <= 1:
        raise ConfigError(f"{sec.path('lease_fraction')}: must be between 0 and 1")
    for name in ("redis_timeout", "stream_lease", "input_bytes_per_token", "lease_hold"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{sec.path(name)}: must be positive")
    if cfg.policy_ttl < 0:
        raise ConfigError(f"{sec.path('policy_ttl')}: must not be negative")
    sec.done()
    return cfg
