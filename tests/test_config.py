"""Config parsing: a wrong file fails at startup with the exact key path in the message."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from llmgw.config import GatewayConfig, load_config, parse_config
from llmgw.errors import ConfigError

GOOD = """
[server]
host = "0.0.0.0"
port = 9000
client_max_size = 1000
anthropic_prefixes = ["/anthropic"]
gc_threshold = 5000

[upstream]
connect_timeout = 2
first_byte_timeout = 30.5

[storage]
url = "sqlite://:memory:"

[providers.anthropic]
base_url = "http://127.0.0.1:1"
api_key_env = "MY_KEY"

[providers.backup]
kind = "anthropic"
region = "eu"

[[routes]]
model = "claude-sonnet-4-6"
display_name = "Sonnet"
aliases = ["sonnet"]

[[routes.deployments]]
provider = "anthropic"

[[routes.deployments]]
provider = "backup"
model = "claude-sonnet-4-6-eu"
weight = 2
max_concurrency = 5
"""


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_empty_config_is_the_default() -> None:
    assert parse_config({}) == GatewayConfig()


def test_full_file_parses_every_field(tmp_path: Path) -> None:
    path = tmp_path / "llmgw.toml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.server.host == "0.0.0.0"
    assert cfg.server.port == 9000
    assert cfg.server.client_max_size == 1000
    assert cfg.server.anthropic_prefixes == ("/anthropic",)
    assert cfg.server.gc_threshold == 5000
    assert cfg.upstream.connect_timeout == 2.0
    assert cfg.upstream.first_byte_timeout == 30.5
    assert cfg.storage.url == "sqlite://:memory:"
    first, backup = cfg.providers
    assert (first.name, first.kind, first.api_key_env) == ("anthropic", "anthropic", "MY_KEY")
    assert (backup.name, backup.kind, dict(backup.options)) == (
        "backup",
        "anthropic",
        {"region": "eu"},
    )
    (route,) = cfg.routes
    assert (route.model, route.display_name, route.aliases) == (
        "claude-sonnet-4-6",
        "Sonnet",
        ("sonnet",),
    )
    assert [d.provider for d in route.deployments] == ["anthropic", "backup"]
    assert route.deployments[1].model == "claude-sonnet-4-6-eu"
    assert route.deployments[1].weight == 2.0
    assert route.deployments[1].max_concurrency == 5


def test_json_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "llmgw.json"
    path.write_text('{"server": {"port": 1234}}')
    assert load_config(path).server.port == 1234


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"colour": "blue"}, "colour"),
        ({"server": {"prot": 1}}, "server.prot"),
        ({"upstream": {"idle": 1}}, "upstream.idle"),
        ({"storage": {"uri": "x"}}, "storage.uri"),
        (
            {
                "providers": {"a": {"kind": "anthropic"}},
                "routes": [{"model": "m", "deployments": [{"provider": "a"}], "weight": 1}],
            },
            "routes[0].weight",
        ),
        (
            {
                "providers": {"a": {"kind": "anthropic"}},
                "routes": [{"model": "m", "deployments": [{"provider": "a", "modle": "x"}]}],
            },
            "routes[0].deployments[0].modle",
        ),
    ],
)
def test_unknown_key_names_its_path(data: dict[str, Any], path: str) -> None:
    assert _error(data) == f"{path}: unknown key"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"server": {"port": "8080"}}, "server.port: expected an integer, got str"),
        ({"server": {"port": True}}, "server.port: expected an integer, got bool"),
        ({"server": {"host": 1}}, "server.host: expected a string, got int"),
        ({"server": "x"}, "server: expected a table, got str"),
        (
            {"server": {"anthropic_prefixes": ["/a", 2]}},
            "server.anthropic_prefixes[1]: expected a string",
        ),
        ({"upstream": {"idle_timeout": "5s"}}, "upstream.idle_timeout: expected a number, got str"),
        ({"routes": {"model": "x"}}, "routes: expected an array of tables, got dict"),
        (
            {"providers": {"p": {"kind": "openai"}}},
            "providers.p.kind: unknown provider kind 'openai'",
        ),
    ],
)
def test_wrong_type_names_its_path(data: dict[str, Any], message: str) -> None:
    assert _error(data) == message


def test_route_to_an_unknown_provider_names_the_deployment() -> None:
    data = {
        "providers": {"anthropic": {}},
        "routes": [
            {"model": "a", "deployments": [{"provider": "anthropic"}]},
            {"model": "b", "deployments": [{"provider": "anthropic"}, {"provider": "bedrok"}]},
        ],
    }
    assert _error(data) == "routes[1].deployments[1].provider: unknown provider 'bedrok'"


def test_route_without_deployments_or_model_is_refused() -> None:
    providers: dict[str, Any] = {"anthropic": {}}
    assert _error({"providers": providers, "routes": [{"model": "a", "deployments": []}]}) == (
        "routes[0].deployments: a route needs at least one deployment"
    )
    assert _error(
        {"providers": providers, "routes": [{"deployments": [{"provider": "anthropic"}]}]}
    ) == ("routes[0].model: required")


def test_unreadable_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: cannot read")):
        load_config(missing)
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match=re.escape(str(bad))):
        load_config(bad)
