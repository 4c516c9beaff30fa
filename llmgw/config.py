"""Gateway configuration: frozen dataclasses and one loader with path-precise errors.

Secrets never live in the file: a provider names the environment variable that holds its
key (``api_key_env``), and nothing here writes a secret back or logs it.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = (
    "DeploymentConfig",
    "GatewayConfig",
    "ProviderConfig",
    "RouteConfig",
    "ServerConfig",
    "StorageConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
)

PROVIDER_KINDS = ("anthropic", "bedrock", "vertex")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    #: Largest request body accepted; Anthropic's own edge limit is 32 MB (images, PDFs).
    client_max_size: int = 32 * 1024 * 1024
    #: Extra path prefixes the Anthropic surface is also mounted under (``/anthropic``).
    anthropic_prefixes: tuple[str, ...] = ()


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
class RouteConfig:
    model: str
    deployments: tuple[DeploymentConfig, ...]
    aliases: tuple[str, ...] = ()
    display_name: str | None = None


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
    providers: tuple[ProviderConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()


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
        ),
        upstream=UpstreamConfig(
            connect_timeout=upstream.get_float("connect_timeout", 10.0),
            first_byte_timeout=upstream.get_float("first_byte_timeout", 600.0),
            idle_timeout=upstream.get_float("idle_timeout", 300.0),
            pool_size=upstream.get_int("pool_size", 1000),
            disconnect_poll_interval=upstream.get_float("disconnect_poll_interval", 0.25),
        ),
        storage=StorageConfig(
            url=storage.get_str("url", "sqlite:///llmgw.db"),
            redis_url=storage.opt_str("redis_url"),
        ),
        providers=providers,
        routes=routes,
    )
    server.done()
    upstream.done()
    storage.done()
    root.done()
    return cfg


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
