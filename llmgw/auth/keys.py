"""Virtual keys: generation and the keyed hash they are stored and looked up under.

A key is ``sk-llmgw-`` followed by 43 URL-safe characters (256 random bits). The server
keeps only ``HMAC-SHA-256(server_secret, key)``: a database dump alone cannot be used to
test guesses offline, and a digest of a high-entropy key reveals nothing about it. Keys are
looked up by that digest (an indexed equality match on a value the attacker cannot steer
towards a stored one) and then compared with :func:`hmac.compare_digest`.

Static keys from the config file use plain SHA-256 instead: the operator must be able to
compute the digest without the server secret (``printf %s "$KEY" | sha256sum``), and
SHA-256 of a random key is as hard to invert as the HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = (
    "KEY_PREFIX",
    "KeyHasher",
    "NewKey",
    "generate_key",
    "key_hint",
    "new_key_id",
    "sha256_hex",
)

KEY_PREFIX = "sk-llmgw-"
_KEY_BYTES = 32


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class NewKey:
    """A freshly minted key: ``secret`` is shown once and never stored."""

    secret: str
    digest: str
    hint: str

    def __repr__(self) -> str:  # never print the secret by accident
        return f"NewKey(hint={self.hint!r})"


class KeyHasher:
    """HMAC-SHA-256 under the server secret; the one place a key becomes a digest."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the key secret must be at least 16 bytes")
        self._secret = secret

    def digest(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def new_key(self) -> NewKey:
        secret = generate_key()
        return NewKey(secret=secret, digest=self.digest(secret), hint=key_hint(secret))

    def __repr__(self) -> str:
        return "KeyHasher(<secret>)"


def generate_key() -> str:
    """A new virtual key: recognisable prefix + 256 bits from the OS CSPRNG."""
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def key_hint(key: str) -> str:
    """What lists may show: the prefix and the last four characters (16 of 256 bits)."""
    return f"{KEY_PREFIX}...{key[-4:]}"


def new_key_id() -> str:
    """A public identifier for a key; safe in logs, URLs and usage records."""
    return "key_" + secrets.token_hex(8)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
