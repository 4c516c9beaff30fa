"""Credential → :class:`~llmgw.context.Identity`, in microseconds on the hot path.

Order: a JWT-shaped bearer goes to the JWT verifier (when configured); anything else is a
key. A key is digested once (HMAC under the server secret, or SHA-256 when there is no
store), then looked up in the TTL cache, and only on a miss in the static keys and the key
store. Known, unknown, wrong and revoked keys all run the same code: the lookup result
(or a dummy digest) is compared with :func:`hmac.compare_digest` before anything branches
on it. Results, negative ones included, are cached for ``cache_ttl`` seconds: that is the
bound on how long a revoke made on another instance takes to apply here.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..context import Identity
from ..errors import AuthenticationError
from .cache import TTLCache
from .keys import KeyHasher, sha256_hex
from .store import KeyMatch, KeyStore

if TYPE_CHECKING:
    from .jwt import JwtVerifier

__all__ = ("INVALID_KEY_MESSAGE", "Authenticator", "identity_from_match")

INVALID_KEY_MESSAGE = (
    "invalid API key: the gateway did not accept the credential sent in x-api-key or "
    "Authorization: Bearer"
)
_EXPIRED_MESSAGE = "API key expired: ask the gateway operator for a new one"
# Compared against when nothing matched, so a miss does the same work as a hit.
_DUMMY_DIGEST = "0" * 64


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: str
    identity: Identity | None


def identity_from_match(match: KeyMatch) -> Identity:
    """The identity a stored key resolves to; a rotated-out digest expires with its grace."""
    record = match.record
    expires = record.expires_at
    if match.valid_until is not None:
        expires = match.valid_until if expires is None else min(expires, match.valid_until)
    return Identity(
        key_id=record.key_id,
        user=record.user,
        team=record.team,
        project=record.project,
        allowed_models=record.allowed_models,
        expires_at=expires,
        metadata={
            **record.metadata,
            "credential": "virtual_key",
            "name": record.name,
            "limits": dict(record.limits),
        },
    )


class Authenticator:
    """Resolves credentials; ``store`` may be bound after construction (when the database
    opens) and is looked up on every cache miss."""

    def __init__(
        self,
        *,
        hasher: KeyHasher | None = None,
        store: KeyStore | None = None,
        static: Mapping[str, Identity] | None = None,
        jwt: JwtVerifier | None = None,
        cache_ttl: float = 5.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if store is not None and hasher is None:
            raise ValueError("a key store needs a KeyHasher (the server secret)")
        self.hasher = hasher
        self.store = store
        #: SHA-256 hex of the key → identity.
        self.static = dict(static or {})
        self.jwt = jwt
        self.cache_ttl = cache_ttl
        self._cache: TTLCache[str, _Entry] = TTLCache(ttl=cache_ttl, maxsize=cache_size)
        self._clock = clock

    async def authenticate(self, credential: str) -> Identity:
        """The caller's identity; raises :class:`~llmgw.errors.AuthenticationError`."""
        if self.jwt is not None and _looks_like_jwt(credential):
            return await self._from_jwt(credential)
        digest = (
            self.hasher.digest(credential) if self.hasher is not None else sha256_hex(credential)
        )
        entry = self._cache.get(digest)
        if entry is None:
            entry = await self._load(credential, digest)
            self._cache.put(digest, entry)
        matched = hmac.compare_digest(entry.digest, digest)
        identity = entry.identity
        if not matched or identity is None:
            raise AuthenticationError(INVALID_KEY_MESSAGE)
        if identity.expires_at is not None and identity.expires_at <= self._clock():
            raise AuthenticationError(_EXPIRED_MESSAGE)
        return identity

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget cached results for ``key_id`` (every key when ``None``) on this instance."""
        if key_id is None:
            self._cache.clear()
        else:
            self._cache.discard_if(lambda e: e.identity is not None and e.identity.key_id == key_id)

    async def _load(self, credential: str, digest: str) -> _Entry:
        if self.static:
            found = self.static.get(sha256_hex(credential) if self.hasher else digest)
            if found is not None:
                return _Entry(digest, found)
        match = await self.store.lookup(digest) if self.store is not None else None
        if match is None or match.record.revoked_at is not None:
            return _Entry(_DUMMY_DIGEST, None)
        return _Entry(match.digest, identity_from_match(match))

    async def _from_jwt(self, token: str) -> Identity:
        assert self.jwt is not None
        digest = sha256_hex(token)
        entry = self._cache.get(digest)
        if entry is not None and entry.identity is not None:
            return entry.identity  # cached no longer than the token's own exp
        identity = await self.jwt.verify(token)
        assert identity.expires_at is not None
        self._cache.put(digest, _Entry(digest, identity), ttl=identity.expires_at - self._clock())
        return identity


def _looks_like_jwt(credential: str) -> bool:
    # base64url of '{"' is 'eyJ'; virtual and static keys never start that way in practice.
    return credential.startswith("eyJ") and credential.count(".") == 2
