"""Build the authentication pieces from :class:`~llmgw.config.AuthConfig` (used by
``make_app`` and ``llmgw keys``); environment variables are read here, once, at startup."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from ..admin import admin_api, key_routes
from ..config import AuthConfig, GatewayConfig
from ..context import Identity
from ..errors import ConfigError
from ..keys import AUTHENTICATOR, DATABASE
from ..middlewares.auth import auth_middleware
from ..storage import ensure_database
from .authenticator import Authenticator
from .keys import KeyHasher, sha256_hex
from .sql import SQLKeyStore
from .throttle import FailureThrottle

__all__ = (
    "admin_credential",
    "auth_store_ctx",
    "auth_throttle",
    "build_authenticator",
    "install_auth",
    "key_hasher",
    "static_identities",
)


def key_hasher(config: AuthConfig, env: Mapping[str, str] = os.environ) -> KeyHasher:
    """The server secret's hasher; a missing or short secret is a startup error."""
    secret = env.get(config.key_secret_env)
    if not secret:
        raise ConfigError(
            f"auth.key_secret_env: environment variable {config.key_secret_env} is not set "
            "(it holds the secret virtual keys are hashed with)"
        )
    if len(secret.encode()) < 16:
        raise ConfigError(f"auth.key_secret_env: {config.key_secret_env} must be >= 16 bytes")
    return KeyHasher(secret.encode())


def static_identities(
    config: AuthConfig, env: Mapping[str, str] = os.environ
) -> dict[str, Identity]:
    """SHA-256 hex → identity for every ``auth.static_keys`` entry."""
    out: dict[str, Identity] = {}
    for i, item in enumerate(config.static_keys):
        digest = item.sha256
        if item.key_env is not None:
            value = env.get(item.key_env)
            if not value:
                raise ConfigError(
                    f"auth.static_keys[{i}].key_env: environment variable {item.key_env} is not set"
                )
            digest = sha256_hex(value)
        assert digest is not None
        out[digest] = Identity(
            key_id=f"static:{item.id}",
            user=item.user,
            team=item.team,
            project=item.project,
            allowed_models=item.allowed_models,
            metadata={"credential": "static", "name": item.id, "limits": dict(item.limits)},
        )
    return out


def build_authenticator(config: AuthConfig, env: Mapping[str, str] = os.environ) -> Authenticator:
    """Everything but the key store, which :func:`auth_store_ctx` binds once the database is
    open."""
    hasher = key_hasher(config, env) if config.store else None
    verifier = None
    if config.jwt is not None:
        try:
            from .jwt import JwtVerifier, jwks_from_file, jwks_from_url
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigError("auth.jwt needs the 'jwt' extra: pip install llmgw[jwt]") from None
        jcfg = config.jwt
        secret = None
        if jcfg.secret_env is not None:
            value = env.get(jcfg.secret_env)
            if not value:
                raise ConfigError(
                    f"auth.jwt.secret_env: environment variable {jcfg.secret_env} is not set"
                )
            secret = value.encode()
        loader = None
        if jcfg.jwks_url is not None:
            loader = jwks_from_url(jcfg.jwks_url, timeout=jcfg.jwks_timeout)
        elif jcfg.jwks_file is not None:
            loader = jwks_from_file(jcfg.jwks_file)
        verifier = JwtVerifier(jcfg, secret=secret, jwks=loader)
    return Authenticator(
        hasher=hasher,
        static=static_identities(config, env),
        jwt=verifier,
        cache_ttl=config.cache_ttl,
        cache_size=config.cache_size,
    )


async def auth_store_ctx(app: web.Application) -> AsyncIterator[None]:
    """Bind the SQL key store (on ``app[DATABASE]``) to ``app[AUTHENTICATOR]``.

    Append after ``database_ctx``; requests fail closed (401) until it has run.
    """
    store = SQLKeyStore(app[DATABASE])
    await store.open()
    app[AUTHENTICATOR].store = store
    try:
        yield
    finally:
        app[AUTHENTICATOR].store = None
        await store.close()


def auth_throttle(config: AuthConfig) -> FailureThrottle:
    return FailureThrottle(max_failures=config.max_failures, window=config.failure_window)


def admin_credential(config: AuthConfig, env: Mapping[str, str] = os.environ) -> str | None:
    """The admin API credential, or ``None`` (no admin API) when its variable is unset."""
    value = env.get(config.admin_key_env)
    if not value:
        return None
    if len(value) < 16:
        raise ConfigError(f"auth.admin_key_env: {config.admin_key_env} must be >= 16 characters")
    return value


def install_auth(app: web.Application, config: GatewayConfig) -> None:
    """Client authentication on ``app``, and key management under ``/admin`` when keys
    are stored (the key store opens after the shared database)."""
    authenticator = build_authenticator(config.auth)
    app[AUTHENTICATOR] = authenticator
    app.middlewares.append(auth_middleware(authenticator, throttle=auth_throttle(config.auth)))
    if config.auth.store:
        ensure_database(app)
        app.cleanup_ctx.append(auth_store_ctx)
        admin_api(app).add_routes(key_routes)
