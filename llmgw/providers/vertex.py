"""Google Vertex AI as upstream (extra ``vertex``: google-auth).

Credentials are application default credentials or a service-account file, loaded lazily.
The access token is cached until five minutes before it expires; a refresh (blocking HTTP
inside google-auth) runs in a thread, under a lock so a burst of requests refreshes once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from ..betas import VERTEX_BETAS, BetaPolicy, beta_policy_from_options
from ..errors import BadGatewayError, ConfigError
from ..formats._modelid import quote_model_id
from ..headers import AUTHORIZATION, CONTENT_TYPE
from ..typedefs import ApiFormat, Operation
from .base import UpstreamCall, UpstreamRequest, check_options, upstream_url

__all__ = ("VertexProvider", "vertex_base_url", "vertex_provider")

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_REFRESH_MARGIN = dt.timedelta(minutes=5)
_STR_OPTIONS = frozenset({"project", "region", "credentials_file", "access_token_env"})
_OPTIONS = _STR_OPTIONS | {"betas", "allowed_betas", "model_regions"}


def vertex_base_url(region: str) -> str:
    """``https://{region}-aiplatform.googleapis.com/v1``; the global endpoint has no prefix."""
    if region == "global":
        return "https://aiplatform.googleapis.com/v1"
    return f"https://{region}-aiplatform.googleapis.com/v1"


def _load_credentials(credentials_file: str | None) -> tuple[Any, str | None]:
    """(credentials, project) from a service-account file or ADC; blocking, run in a thread."""
    try:
        import google.auth
        from google.oauth2 import service_account
    except ImportError:  # pragma: no cover - the extra is installed in the test venv
        raise ConfigError(
            "the vertex provider needs google-auth: pip install 'llmgw[vertex]'"
        ) from None
    if credentials_file:
        creds = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            credentials_file, scopes=list(SCOPES)
        )
        return creds, getattr(creds, "project_id", None)
    creds, project = google.auth.default(scopes=list(SCOPES))
    return creds, project


def _transport_request() -> Any:
    """A google-auth transport: urllib3 (ships with most installs), else requests."""
    try:
        import urllib3
        from google.auth.transport.urllib3 import Request

        return Request(urllib3.PoolManager())  # type: ignore[no-untyped-call]
    except ImportError:
        pass
    try:
        from google.auth.transport.requests import Request as RequestsRequest
    except ImportError:
        raise BadGatewayError(
            "refreshing Google credentials needs urllib3 or requests installed"
        ) from None
    return RequestsRequest()


class VertexProvider:
    """Calls ``publishers/anthropic`` models in ``project``/``region`` with the gateway's own
    Google identity. ``access_token`` pins a static token (tests, external token brokers);
    ``credentials`` takes any google-auth credentials object (``token``, ``expiry``,
    ``refresh(request)``). ``model_regions`` sends some models to another region (Claude
    Code's ``VERTEX_REGION_CLAUDE_*``): keyed by the model id, or by the id without its
    ``@version``. ``beta_policy`` filters translated requests (:mod:`llmgw.betas`)."""

    __slots__ = (
        "_base_url_fixed",
        "_credentials",
        "_credentials_file",
        "_lock",
        "_request_factory",
        "access_token",
        "base_url",
        "beta_policy",
        "model_regions",
        "name",
        "project",
        "region",
    )

    def __init__(
        self,
        *,
        name: str = "vertex",
        project: str | None,
        region: str,
        base_url: str | None = None,
        access_token: str | None = None,
        credentials: Any = None,
        credentials_file: str | None = None,
        request_factory: Callable[[], Any] = _transport_request,
        model_regions: Mapping[str, str] | None = None,
        beta_policy: BetaPolicy | None = None,
    ) -> None:
        self.name = name
        self.project = project
        self.region = region
        self.base_url = (base_url or vertex_base_url(region)).rstrip("/")
        # A configured base URL (a proxy, a test fake) serves every region.
        self._base_url_fixed = base_url is not None
        self.model_regions = dict(model_regions or {})
        self.beta_policy = beta_policy or BetaPolicy.filter(VERTEX_BETAS)
        self.access_token = access_token
        self._credentials = credentials
        self._credentials_file = credentials_file
        self._request_factory = request_factory
        self._lock = asyncio.Lock()

    @property
    def format(self) -> ApiFormat:
        return ApiFormat.VERTEX

    def __repr__(self) -> str:
        return (
            f"VertexProvider(name={self.name!r}, project={self.project!r}, region={self.region!r})"
        )

    def _fresh(self) -> str | None:
        creds = self._credentials
        token = getattr(creds, "token", None)
        if creds is None or not token:
            return None
        expiry = getattr(creds, "expiry", None)
        if expiry is None:
            return str(token)
        # google-auth keeps expiry as a naive UTC datetime.
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        if expiry.tzinfo is not None:
            expiry = expiry.astimezone(dt.UTC).replace(tzinfo=None)
        return str(token) if expiry - _REFRESH_MARGIN > now else None

    def _refresh(self) -> None:
        if self._credentials is None:
            self._credentials, project = _load_credentials(self._credentials_file)
            if self.project is None:
                self.project = project
        self._credentials.refresh(self._request_factory())

    async def token(self) -> str:
        """A valid access token, refreshed at most once per expiry however many wait for it."""
        if self.access_token:
            return self.access_token
        token = self._fresh()
        if token is not None:
            return token
        async with self._lock:
            token = self._fresh()
            if token is None:
                try:
                    await asyncio.to_thread(self._refresh)
                except ConfigError:
                    raise
                except Exception as exc:
                    raise BadGatewayError(
                        f"could not refresh Google credentials: {type(exc).__name__}"
                    ) from None
                # Just refreshed: use it even if its whole lifetime is inside the margin.
                fresh = getattr(self._credentials, "token", None)
                token = str(fresh) if fresh else None
            if token is None:
                raise BadGatewayError("Google credentials returned no access token")
            return token

    def region_for(self, model: str) -> str:
        """The region serving ``model``: its ``model_regions`` entry, else ``region``."""
        regions = self.model_regions
        return regions.get(model) or regions.get(model.partition("@")[0]) or self.region

    async def build(self, call: UpstreamCall) -> UpstreamRequest:
        token = await self.token()
        if self.project is None:
            raise BadGatewayError("the Vertex provider has no project configured")
        if call.operation is Operation.COUNT_TOKENS:
            target = "count-tokens:rawPredict"
        else:
            method = "streamRawPredict" if call.stream else "rawPredict"
            target = f"{quote_model_id(call.model)}:{method}"
        region = self.region_for(call.model)
        path = (
            f"/projects/{quote(self.project, safe='')}/locations/{quote(region, safe='')}"
            f"/publishers/anthropic/models/{target}"
        )
        base = self.base_url if self._base_url_fixed else vertex_base_url(region)
        url = upstream_url(base + path)
        headers = call.headers  # built for this call: added to, not copied
        headers.popall("x-goog-api-key", None)
        headers[CONTENT_TYPE] = "application/json"
        headers[AUTHORIZATION] = f"Bearer {token}"
        return UpstreamRequest(method="POST", url=url, headers=headers, body=call.body)


def vertex_provider(
    *, name: str, base_url: str | None, api_key_env: str | None, options: Mapping[str, Any]
) -> VertexProvider:
    """A provider from ``[providers.NAME]`` (``kind = "vertex"``), options validated."""
    check_options(name, "vertex", options, known=_OPTIONS, strings=_STR_OPTIONS)
    regions = options.get("model_regions", {})
    if not isinstance(regions, Mapping) or not all(
        isinstance(r, str) and r for r in regions.values()
    ):
        raise ConfigError(f"providers.{name}.model_regions: expected a table of model = region")
    region = options.get("region") or os.environ.get("CLOUD_ML_REGION")
    if not region:
        raise ConfigError(f"providers.{name}.region: required (or set CLOUD_ML_REGION)")
    project = options.get("project") or os.environ.get("ANTHROPIC_VERTEX_PROJECT_ID")
    token_env = options.get("access_token_env") or api_key_env
    token = os.environ.get(token_env) if token_env else None
    if token_env and not token:
        raise ConfigError(f"providers.{name}: environment variable {token_env} is empty")
    return VertexProvider(
        name=name,
        project=project,
        region=region,
        base_url=base_url,
        access_token=token,
        credentials_file=options.get("credentials_file"),
        model_regions=regions,
        beta_policy=beta_policy_from_options(name, options, VERTEX_BETAS),
    )
