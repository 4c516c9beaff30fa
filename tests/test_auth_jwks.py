"""JWTs verified against a JWKS served over HTTP: RS256/ES256, key rotation, a down or hanging
identity provider (cached keys keep working, unknown kids are refused within the timeout)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anthropic
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pytest_aiohttp import AiohttpServer

from llmgw.auth.jwt import JwtVerifier, jwks_from_url
from llmgw.config import JwtConfig, parse_config
from llmgw.context import get_context
from llmgw.errors import AuthenticationError, ConfigError
from llmgw.typedefs import Handler
from tests.conftest import GatewayFactory, gateway_config
from tests.fakes import FakeAnthropic

ISS, AUD = "https://idp.example", "llmgw"
RSA_1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_1 = ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return jwk | {"kid": kid, "alg": "RS256", "use": "sig"}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return jwk | {"kid": kid, "alg": "ES256", "use": "sig"}


def token(key: Any, alg: str, kid: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "ada", "team": "core", "iss": ISS, "aud": AUD, "iat": now, "exp": now + 300}
    return jwt.encode(body | claims, key, algorithm=alg, headers={"kid": kid})


class JwksServer:
    """An identity provider's JWKS endpoint that can be slowed, hung or stopped."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.fetches = 0
        self.delay = 0.0
        self.hang = False
        self.released = asyncio.Event()
        self.url = ""
        self.server: Any = None

    async def start(self, aiohttp_server: AiohttpServer) -> str:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._serve)
        self.server = await aiohttp_server(app)
        self.url = str(self.server.make_url("/.well-known/jwks.json"))
        return self.url

    async def _serve(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.hang:
            await self.released.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"keys": self.keys})

    async def stop(self) -> None:
        await self.server.close()


@pytest.fixture
async def idp(aiohttp_server: AiohttpServer) -> Any:
    server = JwksServer([rsa_jwk(RSA_1, "rsa-1"), ec_jwk(EC_1, "ec-1")])
    await server.start(aiohttp_server)
    yield server
    server.released.set()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jwt_config(**kw: Any) -> JwtConfig:
    fields: dict[str, Any] = {
        "issuer": ISS,
        "audience": AUD,
        "algorithms": ("RS256", "ES256"),
        "leeway": 0,
        "team_claim": "team",
        "jwks_refresh_interval": 60.0,
        "jwks_timeout": 2.0,
        "jwks_max_age": 3600.0,
    }
    return JwtConfig(**(fields | kw))


def verifier(idp: JwksServer, clock: Clock | None = None, **kw: Any) -> JwtVerifier:
    cfg = jwt_config(**kw)
    loader = jwks_from_url(idp.url, timeout=cfg.jwks_timeout)
    return JwtVerifier(cfg, jwks=loader, clock=clock or Clock())


async def refused(v: JwtVerifier, credential: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await v.verify(credential)
    return caught.value.message


async def test_rs256_and_es256_tokens_verify_with_keys_fetched_from_the_url(
    idp: JwksServer,
) -> None:
    v = verifier(idp)
    rs = await v.verify(token(RSA_1, "RS256", "rsa-1"))
    es = await v.verify(token(EC_1, "ES256", "ec-1", sub="bob"))
    assert (rs.user, rs.team, es.user) == ("ada", "core", "bob")
    assert idp.fetches == 1  # the second token used the cached set
    forged = token(RSA_2, "RS256", "rsa-1")  # right kid, wrong key
    assert "signature" in await refused(v, forged)


async def test_concurrent_first_requests_share_one_fetch_and_all_succeed(
    idp: JwksServer,
) -> None:
    idp.delay = 0.2
    v = verifier(idp)
    tokens = [token(RSA_1, "RS256", "rsa-1", sub=f"u{i}") for i in range(20)]
    identities = await asyncio.gather(*(v.verify(t) for t in tokens))
    assert [i.user for i in identities] == [f"u{i}" for i in range(20)]
    assert idp.fetches == 1


async def test_rotated_in_kid_is_fetched_and_forged_kids_are_rate_limited(
    idp: JwksServer,
) -> None:
    clock = Clock()
    v = verifier(idp, clock)
    await v.verify(token(RSA_1, "RS256", "rsa-1"))
    assert idp.fetches == 1

    idp.keys = [*idp.keys, rsa_jwk(RSA_2, "rsa-2")]  # the provider publishes its next key
    clock.now += 61
    assert (await v.verify(token(RSA_2, "RS256", "rsa-2"))).user == "ada"
    assert idp.fetches == 2

    for i in range(10):  # a stream of made-up kids costs the provider nothing more
        assert "unknown signing key" in await refused(v, token(RSA_2, "RS256", f"forged-{i}"))
    assert idp.fetches == 2
    clock.now += 61
    assert "unknown signing key" in await refused(v, token(RSA_2, "RS256", "forged-x"))
    assert idp.fetches == 3
    assert (await v.verify(token(RSA_1, "RS256", "rsa-1"))).user == "ada"


async def test_key_withdrawn_from_the_jwks_stops_verifying_after_max_age(
    idp: JwksServer,
) -> None:
    clock = Clock()
    v = verifier(idp, clock, jwks_max_age=600.0)
    old = token(RSA_1, "RS256", "rsa-1")
    await v.verify(old)
    idp.keys = [rsa_jwk(RSA_2, "rsa-2")]  # rsa-1 is withdrawn (compromised, retired)
    clock.now += 300
    assert (await v.verify(old)).user == "ada"  # still cached, no fetch yet
    assert idp.fetches == 1
    clock.now += 301
    assert "unknown signing key" in await refused(v, old)
    assert idp.fetches == 2
    assert (await v.verify(token(RSA_2, "RS256", "rsa-2"))).user == "ada"


async def test_jwks_server_down_keeps_cached_keys_and_refuses_unknown_kids_fast(
    idp: JwksServer,
) -> None:
    clock = Clock()
    v = verifier(idp, clock, jwks_max_age=600.0)
    good = token(EC_1, "ES256", "ec-1")
    await v.verify(good)
    await idp.stop()

    clock.now += 700  # past max age and the refresh interval: a refetch is due and fails
    started = time.monotonic()
    assert (await v.verify(good)).user == "ada"
    assert "unknown signing key" in await refused(v, token(RSA_2, "RS256", "rsa-new"))
    clock.now += 61
    assert "unknown signing key" in await refused(v, token(RSA_2, "RS256", "rsa-new"))
    assert (await v.verify(good)).user == "ada"
    assert time.monotonic() - started < 2.0  # connection refused: no waiting at all


async def test_hanging_jwks_server_costs_at_most_the_fetch_timeout(idp: JwksServer) -> None:
    clock = Clock()
    v = verifier(idp, clock, jwks_timeout=0.3)
    good = token(RSA_1, "RS256", "rsa-1")
    await v.verify(good)
    idp.hang = True

    clock.now += 61
    started = time.monotonic()
    unknown = v.verify(token(RSA_2, "RS256", "rsa-new"))
    cached = v.verify(good)
    results = await asyncio.gather(unknown, cached, return_exceptions=True)
    elapsed = time.monotonic() - started
    assert isinstance(results[0], AuthenticationError)
    assert "unknown signing key" in results[0].message
    assert not isinstance(results[1], BaseException) and results[1].user == "ada"
    assert 0.25 <= elapsed < 1.5
    assert idp.fetches == 2


async def test_gateway_accepts_tokens_verified_through_a_configured_jwks_url(
    idp: JwksServer, gateway: GatewayFactory, fake_anthropic: FakeAnthropic
) -> None:
    config = parse_config(
        {
            "auth": {
                "enabled": True,
                "store": False,
                "jwt": {
                    "issuer": ISS,
                    "audience": AUD,
                    "jwks_url": idp.url,
                    "jwks_timeout": 1.5,
                    "team_claim": "team",
                },
            }
        }
    )
    assert config.auth.jwt is not None and config.auth.jwt.jwks_timeout == 1.5
    seen: list[tuple[str | None, str | None]] = []

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        identity = get_context(request).identity
        assert identity is not None
        seen.append((identity.user, identity.team))
        return await handler(request)

    cfg = gateway_config(str(fake_anthropic.url), auth=config.auth)
    client = await gateway(cfg, middlewares=(observe,))
    for key, alg, kid in ((RSA_1, "RS256", "rsa-1"), (EC_1, "ES256", "ec-1")):
        sdk = anthropic.AsyncAnthropic(
            base_url=str(client.make_url("")), api_key=token(key, alg, kid), max_retries=0
        )
        reply = await sdk.messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.content
        await sdk.close()
    assert seen == [("ada", "core"), ("ada", "core")]
    assert idp.fetches == 1

    sdk = anthropic.AsyncAnthropic(
        base_url=str(client.make_url("")),
        api_key=token(RSA_2, "RS256", "rsa-unknown"),
        max_retries=0,
    )
    with pytest.raises(anthropic.AuthenticationError):
        await sdk.messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    await sdk.close()


@pytest.mark.parametrize("field", ["jwks_timeout", "jwks_max_age"])
def test_jwks_timeouts_must_be_positive(field: str) -> None:
    jwt_table = {"issuer": ISS, "audience": AUD, "jwks_url": "https://idp/jwks", field: 0}
    with pytest.raises(ConfigError, match=f"auth.jwt.{field}: must be > 0"):
        parse_config({"auth": {"enabled": True, "jwt": jwt_table}})
