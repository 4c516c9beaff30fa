"""Which headers cross the gateway, in each direction (pure functions).

Open lists on purpose: ``anthropic-*``, ``x-stainless-*`` and anything unknown travel
verbatim, because new betas and client headers arrive with every release. Only hop-by-hop
headers, the client's credentials and what the gateway itself must recompute are dropped.
"""

from __future__ import annotations

from multidict import CIMultiDict, MultiMapping

__all__ = (
    "CLIENT_CREDENTIAL_HEADERS",
    "REQUEST_ID_HEADER",
    "forward_request_headers",
    "forward_response_headers",
)

#: The gateway's id of a request, on every answer (usage and audit records carry it too).
REQUEST_ID_HEADER = "x-llmgw-request-id"

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

#: Credentials a client presents to the gateway; they never go upstream.
CLIENT_CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "x-api-key",
        "x-goog-api-key",
        "x-amz-content-sha256",
        "x-amz-date",
        "x-amz-security-token",
    }
)

# Recomputed by the HTTP client for the upstream request. accept-encoding is pinned to
# identity so the usage tap reads plain bytes and the client receives them unchanged.
_RECOMPUTED_REQUEST = frozenset({"host", "content-length", "accept-encoding", "expect"})

# Set by the gateway's own server, or meaningless once the body is re-framed.
_RECOMPUTED_RESPONSE = frozenset({"content-length", "server", "date", "set-cookie"})


def _connection_tokens(headers: MultiMapping[str]) -> set[str]:
    """Extra hop-by-hop names a peer listed in ``Connection`` (RFC 9110 §7.6.1)."""
    return {
        token.strip().lower()
        for value in headers.getall("connection", ())
        for token in value.split(",")
        if token.strip()
    }


def forward_request_headers(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """Client request headers minus hop-by-hop, credentials and recomputed ones."""
    drop = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if (
            lower in _HOP_BY_HOP
            or lower in CLIENT_CREDENTIAL_HEADERS
            or lower in _RECOMPUTED_REQUEST
            or lower in drop
        ):
            continue
        out.add(name, value)
    out["accept-encoding"] = "identity"
    return out


def forward_response_headers(
    headers: MultiMapping[str], *, keep_length: bool = False
) -> CIMultiDict[str]:
    """Upstream response headers worth passing to the client (``request-id``,
    ``anthropic-ratelimit-*``, ``retry-after``, ``x-amzn-*``, content type...)."""
    drop = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in drop:
            continue
        if lower in _RECOMPUTED_RESPONSE and not (keep_length and lower == "content-length"):
            continue
        out.add(name, value)
    return out
