"""Amazon Bedrock runtime as upstream (extra ``bedrock``: botocore).

Credentials come from botocore's own chain (environment, shared config/profile, container
and instance roles), resolved once in a thread and refreshed by botocore when they expire;
or a Bedrock API key (``AWS_BEARER_TOKEN_BEDROCK``) is sent as a bearer token instead.

The request is SigV4-signed last, over the exact URL, headers and body bytes that go on the
wire, so nothing may change them afterwards. The client's own ``Authorization``/``x-amz-*``
headers never reach here (:mod:`llmgw.headers` drops them); llmgw always re-signs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict
from yarl import URL

from ..betas import BEDROCK_BETAS, BetaPolicy, beta_policy_from_options
from ..errors import BadGatewayError, ConfigError
from ..formats._modelid import quote_model_id
from ..headers import ACCEPT, AUTHORIZATION, BEDROCK_ACCEPT, CONTENT_TYPE
from ..typedefs import ApiFormat, Operation
from .base import UpstreamCall, UpstreamRequest, check_options, upstream_url

__all__ = ("BedrockProvider", "bedrock_provider")

BEARER_ENV = "AWS_BEARER_TOKEN_BEDROCK"
_STR_OPTIONS = frozenset({"region", "profile", "bearer_token_env"})
_OPTIONS = _STR_OPTIONS | {"betas", "allowed_betas"}


def _botocore() -> Any:
    try:
        import botocore.auth
        import botocore.awsrequest
        import botocore.session
    except ImportError:  # pragma: no cover - the extra is installed in the test venv
        raise ConfigError(
            "the bedrock provider needs botocore: pip install 'llmgw[bedrock]'"
        ) from None
    return botocore


def _action(call: UpstreamCall) -> str:
    if call.operation is Operation.COUNT_TOKENS:
        return "count-tokens"
    return "invoke-with-response-stream" if call.stream else "invoke"


class BedrockProvider:
    """Calls ``bedrock-runtime`` in ``region`` (or ``base_url``) with the gateway's own AWS
    identity. ``bearer_token`` (a Bedrock API key) replaces SigV4 when set.
    ``beta_policy`` filters translated requests (:mod:`llmgw.betas`); by default to the
    betas Bedrock is known to accept."""

    __slots__ = (
        "_boto",
        "_credentials",
        "_lock",
        "_session",
        "base_url",
        "bearer_token",
        "beta_policy",
        "name",
        "region",
    )

    def __init__(
        self,
        *,
        name: str = "bedrock",
        region: str,
        base_url: str | None = None,
        bearer_token: str | None = None,
        profile: str | None = None,
        credentials: Any = None,
        beta_policy: BetaPolicy | None = None,
    ) -> None:
        self.name = name
        self.region = region
        self.beta_policy = beta_policy or BetaPolicy.filter(BEDROCK_BETAS)
        self.base_url = (base_url or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")
        self.bearer_token = bearer_token
        self._boto = _botocore()
        self._session = (
            None if credentials is not None else self._boto.session.Session(profile=profile)
        )
        self._credentials = credentials
        self._lock = asyncio.Lock()

    @property
    def format(self) -> ApiFormat:
        return ApiFormat.BEDROCK

    def __repr__(self) -> str:
        return f"BedrockProvider(name={self.name!r}, region={self.region!r})"

    async def _frozen_credentials(self) -> Any:
        """Current credentials; anything that may block (IMDS, STS, SSO) runs in a thread."""
        if self._credentials is None:
            async with self._lock:
                if self._credentials is None:
                    assert self._session is not None
                    found = await asyncio.to_thread(self._session.get_credentials)
                    if found is None:
                        raise BadGatewayError("no AWS credentials found for the Bedrock provider")
                    self._credentials = found
        creds = self._credentials
        refresh_needed = getattr(creds, "refresh_needed", None)
        if refresh_needed is not None and refresh_needed():
            async with self._lock:
                return await asyncio.to_thread(creds.get_frozen_credentials)
        return creds.get_frozen_credentials()

    async def build(self, call: UpstreamCall) -> UpstreamRequest:
        # Percent-encoded by us (":" → %3A, "/" → %2F, as boto3 does); yarl keeps it as is.
        url = upstream_url(f"{self.base_url}/model/{quote_model_id(call.model)}/{_action(call)}")
        headers = call.headers  # built for this call: added to, not copied
        for name in ("authorization", "host", "x-amz-date", "x-amz-security-token"):
            headers.popall(name, None)
        headers[CONTENT_TYPE] = "application/json"
        headers.setdefault(ACCEPT, "application/json")
        if call.stream:
            headers.setdefault(BEDROCK_ACCEPT, "application/json")
        if self.bearer_token:
            headers[AUTHORIZATION] = f"Bearer {self.bearer_token}"
            return UpstreamRequest(method="POST", url=url, headers=headers, body=call.body)
        return UpstreamRequest(
            method="POST",
            url=url,
            headers=await self._sign(url, headers, call.body),
            body=call.body,
        )

    async def _sign(self, url: URL, headers: CIMultiDict[str], body: bytes) -> CIMultiDict[str]:
        creds = await self._frozen_credentials()
        boto = self._boto
        request = boto.awsrequest.AWSRequest(method="POST", url=str(url), data=body)
        # The Host we sign is the one aiohttp will send (no default port), set explicitly.
        request.headers["host"] = url.host_port_subcomponent
        for name, value in headers.items():
            request.headers[name] = value
        boto.auth.SigV4Auth(creds, "bedrock", self.region).add_auth(request)
        return CIMultiDict(request.headers.items())


def bedrock_provider(
    *, name: str, base_url: str | None, api_key_env: str | None, options: Mapping[str, Any]
) -> BedrockProvider:
    """A provider from ``[providers.NAME]`` (``kind = "bedrock"``), options validated."""
    check_options(name, "bedrock", options, known=_OPTIONS, strings=_STR_OPTIONS)
    region = (
        options.get("region")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )
    if not region:
        raise ConfigError(f"providers.{name}.region: required (or set AWS_REGION)")
    token_env = options.get("bearer_token_env") or api_key_env
    token = os.environ.get(token_env or BEARER_ENV) or None
    if token_env and not token:
        raise ConfigError(f"providers.{name}: environment variable {token_env} is empty")
    return BedrockProvider(
        name=name,
        region=region,
        base_url=base_url,
        bearer_token=token,
        profile=options.get("profile"),
        beta_policy=beta_policy_from_options(name, options, BEDROCK_BETAS),
    )
