"""The rows of `relay.py`'s table: how the driver reaches the upstream, and the llmgw configs.

An llmgw config is a set of TOML *slots* (`storage`, `metering`, `auth`, ...), each the full
text of its tables; a feature variant replaces the slots it turns on in `BARE`, where every
feature is set off explicitly (so a default that changes later cannot turn one on unseen).
Slot text is a `string.Template`: `$upstream` (the fake upstream's URL), `$dir` (a fresh
directory for this proxy process), `$redis`, `$prefix` (Redis keys of this run) and
`$key_sha256` (hash of `BENCH_KEY`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from string import Template

from _report import Roles
from _servers import CASES
from _targets import Goal, added_ttfb, added_ttfb_per_redis_rtt, relay, within_bare

__all__ = (
    "ALL",
    "BARE",
    "BENCH_KEY",
    "DIRECT",
    "LLMGW",
    "NAIVE",
    "VARIANTS",
    "Variant",
    "proxies",
    "render_config",
    "roles",
    "select",
)

DIRECT, NAIVE, LLMGW = "direct", "naive", "llmgw"
DIRECT_BEDROCK, NAIVE_BEDROCK = "direct-bedrock", "naive-bedrock"
_PROXY_ROLES = Roles(baseline=DIRECT, reference=NAIVE)
#: The API key every request carries (checked only by the `+auth` variants).
BENCH_KEY = "sk-bench"
BENCH_KEY_SHA256 = hashlib.sha256(BENCH_KEY.encode()).hexdigest()
#: The Bedrock provider authenticates with a bearer token: no SigV4 signing cost measured.
BEDROCK_TOKEN_ENV = "LLMGW_BENCH_BEDROCK_TOKEN"
ANTHROPIC_PATH = "/v1/messages?case={case}"
#: Claude Code's shape of a Bedrock id; `bench-{case}` tells the upstream what to answer.
BEDROCK_MODEL = "us.anthropic.bench-{case}-v1:0"
BEDROCK_PATH = "/model/" + BEDROCK_MODEL + "/invoke-with-response-stream"

BARE: Mapping[str, str] = {
    "storage": '[storage]\nurl = "sqlite:///$dir/llmgw.db"',
    "providers": '[providers.upstream]\nkind = "anthropic"\nbase_url = "$upstream"',
    "metering": "[metering]\nenabled = false",
    "auth": "[auth]\nenabled = false",
    "audit": "[audit]\nenabled = false",
    "limits": "[limits]\nenabled = false",
}
AUTH = {
    "auth": '[auth]\nenabled = true\nstore = false\n\n[[auth.static_keys]]\nid = "bench"\n'
    'sha256 = "$key_sha256"'
}
#: Defaults (SQL store, crash journal beside the SQLite file, batched writer).
METERING = {"metering": "[metering]\nenabled = true"}
# Every counter kind charged on every request (rpm, tpm, concurrent streams, a budget), with
# limits no run comes near: what is measured is the bookkeeping, never a refusal.
_HUGE = """
[limits.defaults.global]
rpm = 1_000_000_000
tpm = 1_000_000_000_000
concurrent = 1_000_000
budgets = [{ usd = 1_000_000_000, period = "monthly" }]"""
LIMITS_MEMORY = {"limits": '[limits]\nenabled = true\nbackend = "memory"\n' + _HUGE}
LIMITS_REDIS = {
    "storage": BARE["storage"] + '\nredis_url = "$redis"',
    "limits": '[limits]\nenabled = true\nbackend = "redis"\nkey_prefix = "$prefix"\n' + _HUGE,
}
#: The same, each instance leasing 1 % of every limit at a time (``llmgw.limits.leased``).
LIMITS_REDIS_LEASED = {
    **LIMITS_REDIS,
    "limits": LIMITS_REDIS["limits"].replace(
        'backend = "redis"\n', 'backend = "redis"\nlease_fraction = 0.01\n'
    ),
}
AUDIT_BATCHED = {"audit": '[audit]\nenabled = true\nmode = "batched"'}
AUDIT_SYNC = {"audit": '[audit]\nenabled = true\nmode = "sync"'}
#: Three providers behind one model name, all the same upstream: the cost of choosing.
ROUTING = {
    "providers": "\n\n".join(
        f'[providers.{name}]\nkind = "anthropic"\nbase_url = "$upstream"' for name in "abc"
    ),
    "routes": '[[routes]]\nmodel = "claude-sonnet-4-6"\nstrategy = "least_inflight"\n'
    + "".join(
        f'\n[[routes.deployments]]\nprovider = "{name}"\nweight = {weight}\n'
        for name, weight in (("a", 3), ("b", 2), ("c", 1))
    ),
}
_BEDROCK_PROVIDER = (
    '[providers.bedrock]\nkind = "bedrock"\nbase_url = "$upstream"\nregion = "us-east-1"\n'
    f'bearer_token_env = "{BEDROCK_TOKEN_ENV}"'
)
BEDROCK = {"providers": _BEDROCK_PROVIDER}
#: Anthropic clients asking for `claude-bench-{case}`, routed to the Bedrock id of the case.
BEDROCK_TO_SSE = {
    "providers": _BEDROCK_PROVIDER,
    "routes": "\n\n".join(
        f'[[routes]]\nmodel = "claude-bench-{case}"\n'
        f'deployments = [{{ provider = "bedrock", model = "{BEDROCK_MODEL.format(case=case)}" }}]'
        for case in CASES
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    """One row group of the table: how the driver reaches the upstream."""

    name: str
    #: `direct` (no proxy), `naive` (the reference proxy) or `llmgw`.
    kind: str
    #: llmgw: the config's TOML slots (see the module docstring).
    config: Mapping[str, str] = field(default_factory=lambda: dict(BARE))
    #: llmgw: `module:function(GatewayConfig) -> web.Application` run by `_servers.py
    #: gateway`; `None`: `python -m llmgw serve` as shipped.
    app_factory: str | None = None
    #: Extra request headers and proxy environment.
    headers: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    #: What the client speaks: `anthropic` (Messages API, SSE back) or `bedrock`
    #: (InvokeModelWithResponseStream, event stream back).
    surface: str = "anthropic"
    #: `{case}` is replaced by the case name. `model` names the model in an Anthropic body.
    path: str = ANTHROPIC_PATH
    model: str = "claude-sonnet-4-6"
    #: The bytes differ from the upstream's (another format): the first response of each
    #: case is checked event by event, then its digest is expected of every later one.
    translated: bool = False
    roles: Roles = _PROXY_ROLES
    goals: tuple[Goal, ...] = ()


def _feature(
    name: str, slots: Mapping[str, str], *goals: Goal, headers: Mapping[str, str] | None = None
) -> Variant:
    return Variant(
        name=name,
        kind="llmgw",
        config={**BARE, **slots},
        headers=headers or {},
        roles=Roles(baseline=DIRECT, reference=NAIVE, bare=LLMGW),
        goals=goals,
    )


_BEDROCK_ROLES = Roles(baseline=DIRECT_BEDROCK, reference=NAIVE_BEDROCK)
_BEDROCK_ENV = {BEDROCK_TOKEN_ENV: "bench-bedrock-token"}

VARIANTS: tuple[Variant, ...] = (
    Variant(name=DIRECT, kind="direct", roles=Roles()),
    Variant(name=NAIVE, kind="naive", roles=Roles(baseline=DIRECT)),
    Variant(name=LLMGW, kind="llmgw", goals=(relay(),)),
    _feature("llmgw+auth", AUTH, added_ttfb(0.1), headers={"x-api-key": BENCH_KEY}),
    _feature("llmgw+metering", METERING, within_bare(0.05)),
    _feature("llmgw+limits-memory", LIMITS_MEMORY, added_ttfb(0.05)),
    _feature("llmgw+limits-redis", LIMITS_REDIS, added_ttfb_per_redis_rtt()),
    _feature("llmgw+limits-redis-leased", LIMITS_REDIS_LEASED, added_ttfb_per_redis_rtt()),
    _feature("llmgw+audit-batched", AUDIT_BATCHED, within_bare(0.05)),
    _feature("llmgw+audit-sync", AUDIT_SYNC, added_ttfb(1.0)),
    _feature("llmgw+routing", ROUTING, added_ttfb(0.05)),
    _feature(
        "llmgw+all",
        {**AUTH, **METERING, **LIMITS_MEMORY, **AUDIT_BATCHED, **ROUTING},
        headers={"x-api-key": BENCH_KEY},
    ),
    Variant(
        name=DIRECT_BEDROCK,
        kind="direct",
        surface="bedrock",
        path=BEDROCK_PATH,
        roles=Roles(),
    ),
    Variant(
        name=NAIVE_BEDROCK,
        kind="naive",
        surface="bedrock",
        path=BEDROCK_PATH,
        roles=Roles(baseline=DIRECT_BEDROCK),
    ),
    Variant(
        name="bedrock-passthrough",
        kind="llmgw",
        config={**BARE, **BEDROCK},
        env=_BEDROCK_ENV,
        surface="bedrock",
        path=BEDROCK_PATH,
        roles=_BEDROCK_ROLES,
        goals=(relay(),),
    ),
    Variant(
        name="bedrock-to-sse",
        kind="llmgw",
        config={**BARE, **BEDROCK_TO_SSE},
        env=_BEDROCK_ENV,
        model="claude-bench-{case}",
        translated=True,
    ),
)

#: Run only when named: a feature's least possible cost (`_floors.py`).
FLOORS: tuple[Variant, ...] = tuple(
    Variant(
        name=f"llmgw+{feature}-floor",
        kind="llmgw",
        config=BARE,
        roles=Roles(baseline=DIRECT, reference=NAIVE, bare=LLMGW),
        app_factory=f"_floors:{feature}_floor",
    )
    for feature in ("metering", "audit")
)
ALL = VARIANTS + FLOORS


def render_config(variant: Variant, **values: str) -> str:
    """The TOML file of an llmgw variant, template values filled in."""
    return "\n\n".join(Template(text).substitute(values) for text in variant.config.values()) + "\n"


def roles(variants: tuple[Variant, ...]) -> dict[str, Roles]:
    return {v.name: v.roles for v in variants}


def proxies(names: str) -> tuple[Variant, ...]:
    """Exactly the proxies named (comma-separated), in the order given: the scripts that
    start one proxy process per variant and compare each with the first."""
    by_name = {v.name: v for v in ALL}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name or n == DIRECT]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r}; known: {', '.join(by_name)}")
    return tuple(by_name[n] for n in wanted)


def select(names: str | None) -> tuple[Variant, ...]:
    """The variants named (comma-separated; all when `None`), plus every row they are
    compared with, in table order."""
    if names is None:
        return VARIANTS
    by_name = {v.name: v for v in ALL}
    wanted = {DIRECT} | {n.strip() for n in names.split(",") if n.strip()}
    unknown = sorted(wanted - set(by_name))
    if unknown:
        known = ", ".join(by_name)
        raise SystemExit(f"unknown variant {unknown[0]!r}; known: {known}")
    for name in list(wanted):
        role = by_name[name].roles
        wanted |= {n for n in (role.baseline, role.reference, role.bare) if n is not None}
    for name in list(wanted):  # the bare row's own comparisons
        role = by_name[name].roles
        wanted |= {n for n in (role.baseline, role.reference) if n is not None}
    return tuple(v for v in ALL if v.name in wanted)
