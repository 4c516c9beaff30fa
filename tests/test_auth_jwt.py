"""JWT credentials: HS256 with a shared secret, RS256/ES256 from a JWKS, and every refusal."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from llmgw.auth import Authenticator
from llmgw.auth.jwt import JwtVerifier, jwks_from_file
from llmgw.config import AuthConfig, JwtConfig
from llmgw.errors import AuthenticationError
from tests.conftest import GatewayFactory, gateway_config
from tests.fakes import FakeAnthropic
from tests.secret_scan import SecretRegistry

HS_SECRET = b"jwt-shared-secret-for-tests-0123456789abcdef"
ISS, AUD = "https://idp.example", "llmgw"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "ada",
        "team": "core",
        "proj": "gw",
        "models": ["claude-haiku-4-5"],
        "iss": ISS,
        "aud": AUD,
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _hs(**overrides: Any) -> str:
    return jwt.encode(_claims(**overrides), HS_SECRET, algorithm="HS256")


def _config(algorithms: tuple[str, ...], **kw: Any) -> JwtConfig:
    return JwtConfig(
        issuer=ISS,
        audience=AUD,
        algorithms=algorithms,
        leeway=0,
        team_claim="team",
        project_claim="proj",
        models_claim="models",
        **kw,
    )


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    ec_jwk = json.loads(ECAlgorithm.to_jwk(EC_KEY.public_key()))
    rsa_jwk.update(kid="rsa-1", alg="RS256", use="sig")
    ec_jwk.update(kid="ec-1", alg="ES256", use="sig")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}))
    return path


def _asym(jwks_file: Path) -> JwtVerifier:
    return JwtVerifier(_config(("RS256", "ES256")), jwks=jwks_from_file(jwks_file))


async def _refusal(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(AuthenticationError) as refused:
        await verifier.verify(token)
    assert refused.value.status == 401
    return refused.value.message


async def test_hs256_token_maps_claims_to_identity() -> None:
    verifier = JwtVerifier(_config(("HS256",)), secret=HS_SECRET)
    identity = await verifier.verify(_hs())
    assert identity.key_id == "jwt:ada"
    assert (identity.user, identity.team, identity.project) == ("ada", "core", "gw")
    assert identity.allowed_models == ("claude-haiku-4-5",)
    assert identity.expires_at is not None and identity.expires_at > time.time()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 10}, "expired"),
        ({"aud": "someone-else"}, "wrong audience"),
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
        ({"exp": None}, "MissingRequiredClaimError"),
    ],
)
async def test_hs256_claim_checks_refuse(overrides: dict[str, Any], reason: str) -> None:
    verifier = JwtVerifier(_config(("HS256",)), secret=HS_SECRET)
    assert reason in await _refusal(verifier, _hs(**overrides))


async def test_wrong_signature_is_refused() -> None:
    verifier = JwtVerifier(_config(("HS256",)), secret=HS_SECRET)
    forged = jwt.encode(_claims(), b"another-secret-another-secret-0123", algorithm="HS256")
    assert "signature" in await _refusal(verifier, forged)


async def test_alg_none_is_refused(jwks_file: Path) -> None:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(_claims())}."
    for verifier in (JwtVerifier(_config(("HS256",)), secret=HS_SECRET), _asym(jwks_file)):
        assert "algorithm 'none' is not accepted" in await _refusal(verifier, unsigned)


async def test_hs256_signed_with_the_public_key_is_refused_in_jwks_mode(jwks_file: Path) -> None:
    # Algorithm confusion: HS256 keyed with bytes the attacker knows.
    token = jwt.encode(
        _claims(), b"public-key-bytes-0123456789abcdef", algorithm="HS256", headers={"kid": "rsa-1"}
    )
    assert "algorithm 'HS256' is not accepted" in await _refusal(_asym(jwks_file), token)


async def test_rs256_and_es256_from_jwks(jwks_file: Path) -> None:
    verifier = _asym(jwks_file)
    rs = jwt.encode(_claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(_claims(sub="bob"), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
    assert (await verifier.verify(rs)).user == "ada"
    assert (await verifier.verify(es)).user == "bob"


async def test_unknown_kid_and_kid_of_another_algorithm_are_refused(jwks_file: Path) -> None:
    verifier = _asym(jwks_file)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unknown = jwt.encode(_claims(), other, algorithm="RS256", headers={"kid": "rsa-9"})
    assert "unknown signing key" in await _refusal(verifier, unknown)
    mixed = jwt.encode(_claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"})
    assert "not a ES256 key" in await _refusal(verifier, mixed)
    spoofed = jwt.encode(_claims(), other, algorithm="RS256", headers={"kid": "rsa-1"})
    assert "signature" in await _refusal(verifier, spoofed)


async def test_unknown_kid_refetches_jwks_at_most_once_per_interval(jwks_file: Path) -> None:
    fetches = 0
    inner = jwks_from_file(jwks_file)

    async def counting() -> Any:
        nonlocal fetches
        fetches += 1
        return await inner()

    verifier = JwtVerifier(_config(("RS256",), jwks_refresh_interval=60), jwks=counting)
    for kid in ("a", "b", "c"):
        token = jwt.encode(_claims(), RSA_KEY, algorithm="RS256", headers={"kid": kid})
        await _refusal(verifier, token)
    assert fetches == 1


async def test_verified_token_is_cached_by_the_authenticator() -> None:
    verifier = JwtVerifier(_config(("HS256",)), secret=HS_SECRET)
    auth = Authenticator(jwt=verifier)
    token = _hs()
    first = await auth.authenticate(token)
    verifier._secret = b"rotated-away-rotated-away-0123456"  # a re-verify would now fail
    assert await auth.authenticate(token) is first


async def test_api_key_helper_jwt_in_both_headers_through_the_gateway(
    gateway: GatewayFactory,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> None:
    monkeypatch.setenv("JWT_SECRET", HS_SECRET.decode())
    secret_registry.add(HS_SECRET.decode())
    auth = AuthConfig(enabled=True, store=False, jwt=_config(("HS256",), secret_env="JWT_SECRET"))
    client = await gateway(gateway_config(str(fake_anthropic.url), auth=auth))
    token = _hs()
    secret_registry.add(token)
    headers = {"x-api-key": token, "Authorization": f"Bearer {token}"}
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert (await client.post("/v1/messages", json=body, headers=headers)).status == 200
    denied = await client.post(
        "/v1/messages", json=body | {"model": "claude-opus-4-8"}, headers=headers
    )
    assert denied.status == 400
    expired = _hs(exp=int(time.time()) - 5)
    resp = await client.post(
        "/v1/messages", json=body, headers={"Authorization": f"Bearer {expired}"}
    )
    assert resp.status == 401
    assert "expired" in (await resp.json())["error"]["message"]
