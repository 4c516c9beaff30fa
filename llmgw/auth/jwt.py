"""JWT bearer credentials (extra ``jwt``, PyJWT): what an ``apiKeyHelper`` script mints.

The token's header only chooses among what the configuration allows: ``alg`` must be in
``algorithms`` (so ``none`` and HS/RS confusion are impossible: HS* verify with the shared
secret only, RS*/ES*/PS* with a JWKS key only), ``kid`` must name a JWKS key. ``exp`` (required),
``nbf``, ``iss`` and ``aud`` are checked with ``leeway`` seconds of skew.

JWKS caching: an unknown ``kid`` refetches the JWKS at most once per
``jwks_refresh_interval``, so key rollover works and a stream of forged kids cannot hammer
the identity provider; keys older than ``jwks_max_age`` are refetched on next use, so a key
the provider withdrew stops verifying. One fetch runs at a time and concurrent requests
wait for it (a burst at startup or rollover is not refused while the keys load). A fetch
is bounded by ``jwks_timeout``; when it fails the cached keys keep working.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from ..config import JwtConfig
from ..context import Identity
from ..errors import AuthenticationError

__all__ = ("JwksLoader", "JwtVerifier", "jwks_from_file", "jwks_from_url")

log = logging.getLogger("llmgw.auth")

JwksLoader = Callable[[], Awaitable[Mapping[str, Any]]]


def jwks_from_file(path: str | Path) -> JwksLoader:
    """Read the JWKS file on every (rate-limited) refresh, so a replaced file is picked up."""

    async def load() -> Mapping[str, Any]:
        data: Mapping[str, Any] = json.loads(await asyncio.to_thread(Path(path).read_bytes))
        return data

    return load


def jwks_from_url(url: str, *, timeout: float = 5.0) -> JwksLoader:
    """Fetch the JWKS over HTTP(S); a short-lived session, as refreshes are rare.

    ``timeout`` bounds the whole fetch, so an identity provider that accepts the connection
    and never answers cannot hold requests.
    """

    async def load() -> Mapping[str, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as resp,
        ):
            resp.raise_for_status()
            data: Mapping[str, Any] = await resp.json(content_type=None)
            return data

    return load


def _reject(reason: str) -> AuthenticationError:
    return AuthenticationError(f"invalid bearer token: {reason}")


class JwtVerifier:
    """Turns a signed JWT into an :class:`~llmgw.context.Identity` or raises a 401."""

    def __init__(
        self,
        config: JwtConfig,
        *,
        secret: bytes | None = None,
        jwks: JwksLoader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._secret = secret
        self._loader = jwks
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        #: When the last fetch was tried (rate limit) and when one last succeeded (max age).
        self._fetched_at: float | None = None
        self._loaded_at: float | None = None
        self._refreshing = asyncio.Lock()

    async def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _reject("malformed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise _reject(f"algorithm {alg!r} is not accepted")
        key: Any
        if alg.startswith("HS"):
            key = self._secret
        else:
            key = await self._signing_key(header.get("kid"), alg)
        cfg = self.config
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _reject("token expired") from None
        except jwt.ImmatureSignatureError:
            raise _reject("token not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise _reject("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise _reject("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise _reject("signature verification failed") from None
        except jwt.PyJWTError as exc:
            raise _reject(type(exc).__name__) from None
        return self._identity(claims)

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        cfg = self.config
        user = _claim(claims, cfg.user_claim)
        if user is None:
            raise _reject(f"claim {cfg.user_claim!r} missing")
        models: tuple[str, ...] | None = None
        if cfg.models_claim is not None:
            raw = claims.get(cfg.models_claim)
            if isinstance(raw, list) and all(isinstance(m, str) for m in raw):
                models = tuple(raw)
            elif raw is not None:
                raise _reject(f"claim {cfg.models_claim!r} must be a list of strings")
        return Identity(
            key_id=f"jwt:{user}",
            user=user,
            team=_claim(claims, cfg.team_claim),
            project=_claim(claims, cfg.project_claim),
            allowed_models=models,
            expires_at=float(claims["exp"]),
            metadata={"credential": "jwt", "issuer": claims.get("iss"), "limits": {}},
        )

    async def _signing_key(self, kid: object, alg: str) -> Any:
        if self._loader is None:
            raise _reject("no JWKS configured")
        if kid is not None and not isinstance(kid, str):
            raise _reject("kid must be a string")
        found = self._pick(kid)
        # A stale key is still good while someone else refetches: only a miss waits.
        if found is None or (self._stale() and not self._refreshing.locked()):
            async with self._refreshing:
                # Whoever held the lock may have just loaded what this request needs.
                found = self._pick(kid)
                if (found is None or self._stale()) and self._may_refresh():
                    await self._refresh()
                    found = self._pick(kid)
        if found is None:
            raise _reject("unknown signing key (kid)")
        if found.algorithm_name != alg:
            raise _reject(f"key {kid!r} is not a {alg} key")
        return found.key

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            # A kid-less token is only unambiguous against a one-key set.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _stale(self) -> bool:
        loaded = self._loaded_at
        return loaded is not None and self._clock() - loaded >= self.config.jwks_max_age

    def _may_refresh(self) -> bool:
        return (
            self._fetched_at is None
            or self._clock() - self._fetched_at >= self.config.jwks_refresh_interval
        )

    async def _refresh(self) -> None:
        assert self._loader is not None
        self._fetched_at = self._clock()
        try:
            data: object = await self._loader()  # whatever the server sent
            listed = data.get("keys") if isinstance(data, Mapping) else None
            if not isinstance(listed, list):
                raise ValueError("not a JWKS: no 'keys' list")
            keys: dict[str, jwt.PyJWK] = {}
            for i, raw in enumerate(listed):
                if not isinstance(raw, Mapping) or raw.get("use", "sig") != "sig":
                    continue
                try:
                    keys[str(raw.get("kid", i))] = jwt.PyJWK(dict(raw))
                except (jwt.PyJWTError, KeyError, TypeError, ValueError):
                    continue  # unsupported or malformed keys are skipped, not fatal
        except (OSError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("JWKS refresh failed: %s", exc)
            return  # keep the previous keys; the next refresh may succeed
        self._keys = keys
        self._loaded_at = self._fetched_at


def _claim(claims: Mapping[str, Any], name: str | None) -> str | None:
    if name is None:
        return None
    value = claims.get(name)
    return str(value) if isinstance(value, str | int) and value != "" else None
