"""What every provider implements: turn a call into the exact HTTP request to send."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from multidict import CIMultiDict
from yarl import URL

from ..errors import ConfigError
from ..typedefs import ApiFormat, Operation

__all__ = ("Provider", "UpstreamCall", "UpstreamRequest", "check_options", "upstream_url")


@functools.lru_cache(maxsize=256)
def upstream_url(raw: str) -> URL:
    """``raw``, already percent-encoded by the provider, as the URL aiohttp sends
    (``encoded=True``: the client's query string travels byte for byte). Parsed once per
    distinct string: a gateway calls a few URLs (a model, an action, ``?beta=true``) over
    and over, and yarl's parse is a measurable part of a request."""
    return URL(raw, encoded=True)


@dataclass(slots=True, kw_only=True)
class UpstreamCall:
    """A request already in the provider's wire format, before credentials are added.

    Built per attempt and handed to one ``build``. Not frozen (as neither is
    :class:`UpstreamRequest`): a frozen dataclass sets each field through
    ``object.__setattr__``, ~3 us a request for the two where a plain one takes ~1.
    """

    operation: Operation
    stream: bool
    #: The provider's model id (it goes into the URL for Bedrock and Vertex).
    model: str
    body: bytes
    #: Client headers that may travel upstream (credentials and hop-by-hop already gone).
    #: Built for this one call: ``build`` adds the provider's own to it in place.
    headers: CIMultiDict[str]
    #: The client's raw query string (``beta=true``), kept for same-format calls.
    query: str = ""


@dataclass(slots=True, kw_only=True)
class UpstreamRequest:
    method: str
    url: URL
    headers: CIMultiDict[str]
    body: bytes


class Provider(Protocol):
    """An upstream. ``build`` is async because credentials may need a refresh."""

    @property
    def name(self) -> str: ...

    @property
    def format(self) -> ApiFormat: ...

    async def build(self, call: UpstreamCall) -> UpstreamRequest: ...


def check_options(
    name: str,
    kind: str,
    options: Mapping[str, Any],
    *,
    known: Iterable[str],
    strings: Iterable[str],
) -> None:
    """Unknown or mistyped ``[providers.NAME]`` options are config errors naming the key."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"providers.{name}.{unknown[0]}: unknown {kind} option")
    for key in strings:
        if key in options and not isinstance(options[key], str):
            raise ConfigError(f"providers.{name}.{key}: expected a string")
