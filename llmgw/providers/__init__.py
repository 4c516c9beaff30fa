"""Upstreams: where and how llmgw calls a model provider."""

from __future__ import annotations

import os

from ..config import ProviderConfig
from ..errors import ConfigError
from .anthropic import DEFAULT_BASE_URL, AnthropicProvider
from .base import Provider, UpstreamCall, UpstreamRequest

__all__ = ("AnthropicProvider", "Provider", "UpstreamCall", "UpstreamRequest", "build_provider")


def _secret(cfg: ProviderConfig, default_env: str | None) -> str | None:
    env = cfg.api_key_env or default_env
    if env is None:
        return None
    value = os.environ.get(env)
    if cfg.api_key_env and not value:
        raise ConfigError(f"providers.{cfg.name}.api_key_env: environment variable {env} is empty")
    return value or None


def build_provider(cfg: ProviderConfig) -> Provider:
    """A provider instance from its configuration (credentials read from the environment)."""
    if cfg.kind == "anthropic":
        base_url = cfg.base_url or DEFAULT_BASE_URL
        key = _secret(cfg, "ANTHROPIC_API_KEY" if base_url == DEFAULT_BASE_URL else None)
        token_env = cfg.options.get("auth_token_env")
        token = os.environ.get(token_env) if isinstance(token_env, str) else None
        return AnthropicProvider(name=cfg.name, base_url=base_url, api_key=key, auth_token=token)
    if cfg.kind == "bedrock":
        from .bedrock import bedrock_provider  # botocore is imported only when used

        return bedrock_provider(
            name=cfg.name, base_url=cfg.base_url, api_key_env=cfg.api_key_env, options=cfg.options
        )
    if cfg.kind == "vertex":
        from .vertex import vertex_provider  # google-auth is imported only when used

        return vertex_provider(
            name=cfg.name, base_url=cfg.base_url, api_key_env=cfg.api_key_env, options=cfg.options
        )
    raise ConfigError(f"providers.{cfg.name}.kind: provider kind {cfg.kind!r} is not available")
