"""Model ids taken from a URL path: decoded once, validated before anything goes upstream.

Bedrock and Vertex put the model id in the path, and the gateway puts it back into an upstream
URL. Anything that could change that URL's meaning (dot segments, a slash outside an ARN,
query or fragment characters, control characters, a second layer of percent-encoding) is
refused here with a 400, so no provider ever sees it.
"""

from __future__ import annotations

import functools
import re
import sys
from urllib.parse import quote, unquote

from ..errors import InvalidRequestError

__all__ = ("MAX_MODEL_ID_LENGTH", "decode_model_id", "quote_model_id")

MAX_MODEL_ID_LENGTH = 2048

# Every character a Bedrock id, inference-profile id, ARN or Vertex version name uses.
_ID = re.compile(r"[A-Za-z0-9._:@+~-]+")
# ARNs are the only ids with a slash: arn:aws[-partition]:bedrock:region:account:type/name.
_ARN = re.compile(
    r"arn:aws(?:-[a-z]+)*:bedrock:[a-z0-9-]*:[0-9]*:[a-z-]+/[A-Za-z0-9._:@+~-]+(?:/[A-Za-z0-9._:@+~-]+)?"
)


@functools.lru_cache(maxsize=256)
def decode_model_id(raw: str) -> str:
    """Percent-decode a raw path segment and validate it as a model id (400 otherwise),
    interned as the Anthropic format's body model is. Remembered per raw segment: a gateway
    sees a few ids (and routing and the format handler both ask), a refused one is
    checked again each time."""
    if not raw:
        raise InvalidRequestError("model id in the path is empty")
    if len(raw) > 3 * MAX_MODEL_ID_LENGTH:
        raise InvalidRequestError("model id in the path is too long")
    try:
        model = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequestError("model id in the path is not valid UTF-8") from None
    if len(model) > MAX_MODEL_ID_LENGTH:
        raise InvalidRequestError(f"model id exceeds {MAX_MODEL_ID_LENGTH} characters")
    if "/" in model:
        if _ARN.fullmatch(model) is None or any(seg in ("", ".", "..") for seg in model.split("/")):
            raise InvalidRequestError("model id contains '/' and is not a Bedrock ARN")
    elif _ID.fullmatch(model) is None:
        raise InvalidRequestError(
            "model id contains characters no model id uses (control, query, fragment, '%'...)"
        )
    if ".." in model or model == ".":
        raise InvalidRequestError("model id must not contain '..'")
    return sys.intern(model)  # one string per model, not one per open stream


@functools.lru_cache(maxsize=256)
def quote_model_id(model: str) -> str:
    """The id as one path segment for an upstream URL: only unreserved characters stay.

    ``:`` becomes ``%3A`` and an ARN's ``/`` becomes ``%2F``, as boto3 sends them.
    Remembered: ``urllib.parse.quote`` walks the id byte by byte in Python.
    """
    return quote(model, safe="-._~@")
