"""Which headers cross the gateway, in each direction (pure functions).

Open lists on purpose: ``anthropic-*``, ``x-stainless-*`` and anything unknown travel
verbatim, because new betas and client headers arrive with every release. Only hop-by-hop
headers, the client's credentials and what the gateway itself must recompute are dropped.
"""

from __future__ import annotations

from multidict import CIMultiDict, MultiMapping, istr

__all__ = (
    "ACCEPT",
    "ACCEPT_ENCODING",
    "ANTHROPIC_BETA",
    "ANTHROPIC_VERSION",
    "AUTHORIZATION",
    "BEDROCK_ACCEPT",
    "CLIENT_CREDENTIAL_HEADERS",
    "CONTENT_TYPE",
    "REQUEST_ID_HEADER",
    "X_API_KEY",
    "forward_request_headers",
    "forward_response_headers",
)

#: Header names the gateway sets are ``istr`` (as ``aiohttp.hdrs`` names are, but lower
#: case as sent before): a plain ``str`` key costs every request's headers an ``istr`` copy
#: of it, held (by the response, or by the upstream call's request info) while it streams.
#: The gateway's id of a request, on every answer (usage and audit records carry it too).
REQUEST_ID_HEADER = istr("x-llmgw-request-id")
ACCEPT = istr("accept")
ACCEPT_ENCODING = istr("accept-encoding")
AUTHORIZATION = istr("authorization")
CONTENT_TYPE = istr("content-type")
ANTHROPIC_BETA = istr("anthropic-beta")
ANTHROPIC_VERSION = istr("anthropic-version")
X_API_KEY = istr("x-api-key")
BEDROCK_ACCEPT = istr("x-amzn-bedrock-accept")

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


_NOT_FORWARDED_REQUEST = _HOP_BY_HOP | CLIENT_CREDENTIAL_HEADERS | _RECOMPUTED_REQUEST
_NOT_FORWARDED_RESPONSE = _HOP_BY_HOP | _RECOMPUTED_RESPONSE
#: ``Connection`` values that name no other header (the usual ones: nothing to parse).
_PLAIN_CONNECTION = frozenset({"keep-alive", "close", "upgrade"})


def _dropped(headers: MultiMapping[str], fixed: frozenset[str]) -> frozenset[str]:
    """``fixed`` plus the extra hop-by-hop names a peer listed in ``Connection``
    (RFC 9110 §7.6.1)."""
    listed = headers.getall("connection", ())
    if not listed or (len(listed) == 1 and listed[0].lower() in _PLAIN_CONNECTION):
        return fixed
    return fixed | {
        token.strip().lower() for value in listed for token in value.split(",") if token.strip()
    }


def forward_request_headers(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """Client request headers minus hop-by-hop, credentials and recomputed ones."""
    drop = _dropped(headers, _NOT_FORWARDED_REQUEST)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    out[ACCEPT_ENCODING] = "identity"
    return out


def forward_response_headers(
    headers: MultiMapping[str], *, keep_length: bool = False
) -> CIMultiDict[str]:
    """Upstream response headers worth passing to the client (``request-id``,
    ``anthropic-ratelimit-*``, ``retry-after``, ``x-amzn-*``, content type...)."""
    drop = _dropped(headers, _NOT_FORWARDED_RESPONSE)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower not in drop or (keep_length and lower == "content-length"):
            out.add(name, value)
    return out
