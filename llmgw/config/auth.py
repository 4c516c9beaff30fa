"""The ``[auth]`` config section: virtual keys, static keys and JWT verification."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ._section import Section

__all__ = ("JWT_ALGORITHMS", "AuthConfig", "JwtConfig", "StaticKeyConfig", "parse_auth")

JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256")


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


def parse_auth(sec: Section) -> AuthConfig:
    d = AuthConfig()
    static = []
    for i, raw in enumerate(sec.array("static_keys")):
        key = Section(raw, f"{sec.path('static_keys')}[{i}]")
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
