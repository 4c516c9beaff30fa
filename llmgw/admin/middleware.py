"""The admin credential check: a separate secret from every client key."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from ..auth.throttle import FailureThrottle
from ..errors import AuthenticationError, RateLimitError
from ..middlewares.auth import presented_credential
from ..typedefs import Handler, Middleware

__all__ = ("admin_middleware",)


def admin_middleware(credential: str, *, throttle: FailureThrottle | None = None) -> Middleware:
    """Refuse every request that does not present ``credential`` (``x-api-key`` or
    ``Authorization: Bearer``). Both sides are digested first, so the constant-time compare
    runs on equal-length values and the credential is not kept in the closure."""
    if len(credential) < 16:
        raise ValueError("the admin credential must be at least 16 characters")
    expected = hashlib.sha256(credential.encode()).digest()

    @web.middleware
    async def _admin(request: web.Request, handler: Handler) -> web.StreamResponse:
        address = request.remote or ""
        if throttle is not None:
            wait = throttle.retry_after(address)
            if wait is not None:
                raise RateLimitError("too many failed admin logins", retry_after=wait)
        presented = hashlib.sha256(presented_credential(request).encode()).digest()
        if not hmac.compare_digest(presented, expected):
            if throttle is not None:
                throttle.failed(address)
            raise AuthenticationError("invalid admin credential")
        return await handler(request)

    return _admin
