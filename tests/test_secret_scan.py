"""The session's secret scan (tests/secret_scan.py) fails a session that leaks, and only then.

Each case runs an inner pytest session in a subprocess (its log records and its exit
status must not mix with this session's).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.secret_scan import secret_env_values

pytest_plugins = ("pytester",)

ROOT = Path(__file__).resolve().parent.parent

INNER_TESTS = """
import logging

import pytest

REGISTERED = "registered-secret-0123456789"
ENV_SECRET = "env-only-secret-9876543210"


def test_registered_secret_in_a_log(secret_registry):
    secret_registry.add(REGISTERED)
    logging.getLogger("plant.registered").warning("oops %s", REGISTERED)


def test_env_secret_in_a_log(monkeypatch):
    monkeypatch.setenv("PLANT_API_KEY", ENV_SECRET)
    logging.getLogger("plant.env").warning("calling with %s", ENV_SECRET)


def test_unregistered_virtual_key_in_a_log():
    key = "sk-llmgw-" + "Zx9" * 12
    logging.getLogger("plant.vkey").error("key %s rejected", key)


def test_display_form_and_non_secret_env_are_fine(monkeypatch):
    monkeypatch.setenv("PLANT_KEY_ID", "identifier-not-a-secret-123")
    logging.getLogger("plant.display").warning(
        "key sk-llmgw-...Zx9 used, id identifier-not-a-secret-123"
    )


def test_registered_secret_in_an_output_file(secret_registry, tmp_path):
    secret_registry.add("file-secret-abcdefgh")
    (tmp_path / "gateway.log").write_text("config: file-secret-abcdefgh")
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest('pytest_plugins = ("tests.secret_scan",)\n')
    pytester.makeini("[pytest]\n")
    return pytester


def test_planted_secrets_fail_the_session_and_are_named_by_place(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_plant=INNER_TESTS)
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["*secret scan FAILED: 4 leak(s)*", "*5 passed*"])
    for place in ("(plant.registered): secret #", "(plant.env): secret #", "gateway.log: secret #"):
        assert place in out
    assert "(plant.vkey): a whole llmgw virtual key" in out
    assert "plant.display" not in out
    for secret in ("registered-secret-0123456789", "env-only-secret-9876543210", "Zx9Zx9"):
        assert secret not in out  # the report names places, never secrets


def test_a_clean_session_passes(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_clean="""
import logging

def test_uses_a_secret_quietly(secret_registry, monkeypatch):
    secret_registry.add("quiet-secret-12345678")
    monkeypatch.setenv("QUIET_TOKEN", "quiet-token-12345678")
    logging.getLogger("quiet").warning("request done, key sk-llmgw-...abcd")
"""
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*secret scan: 2 secrets*clean*"])


def test_a_database_left_in_the_working_tree_fails_the_session(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_stray="""
from pathlib import Path

def test_writes_beside_the_repo():
    Path("llmgw.db").write_bytes(b"SQLite format 3")
"""
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*llmgw.db: written into the working tree*"])


def test_secret_named_variables_are_picked_but_ids_and_paths_are_not() -> None:
    base = {"HOME": "/root", "OLD_TOKEN": "unchanged-token-123"}
    env = {
        **base,
        "NEW_API_KEY": "value-of-a-new-key",
        "MY_SECRET": "a-new-secret-value",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00",
        "KEY_SECRET_ENV": "LLMGW_KEY_SECRET",
        "CREDENTIALS_JSON": "/tmp/some/creds.json",
        "SHORT_TOKEN": "abc",
        "PLAIN": "not-secret-named-value",
    }
    assert secret_env_values(env, base) == {"value-of-a-new-key", "a-new-secret-value"}
