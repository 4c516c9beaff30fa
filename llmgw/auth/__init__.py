"""Client authentication: virtual keys, static keys and JWTs, resolved to an Identity.

``keys`` mints and digests keys, ``store``/``sql`` persist them, ``cache`` and ``throttle``
bound the per-request cost and brute force, ``jwt`` verifies bearer JWTs (extra ``jwt``),
``authenticator`` ties them together, ``manage`` is the key lifecycle used by the admin API
and the CLI, ``policy`` the model allow-list, ``setup`` builds it all from the config.
"""

from .authenticator import Authenticator
from .keys import KEY_PREFIX, KeyHasher, generate_key
from .manage import KeyManager, KeySpec
from .policy import ensure_model_allowed, model_allowed
from .store import KeyMatch, KeyRecord, KeyStore, MemoryKeyStore
from .throttle import FailureThrottle

__all__ = (
    "KEY_PREFIX",
    "Authenticator",
    "FailureThrottle",
    "KeyHasher",
    "KeyManager",
    "KeyMatch",
    "KeyRecord",
    "KeySpec",
    "KeyStore",
    "MemoryKeyStore",
    "ensure_model_allowed",
    "generate_key",
    "model_allowed",
)
