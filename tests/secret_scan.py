"""Session-wide check that no secret a test used leaked into a log line or an output file.

How it works (a pytest plugin loaded by ``tests/conftest.py``):

* Tests register every secret they hand to the gateway (client keys, provider keys, admin
  credentials, JWT signing secrets) with the session's :class:`SecretRegistry`, through the
  ``secret_registry`` fixture: ``secret_registry.add(value)``; files a test writes outside
  its ``tmp_path`` (a subprocess's captured output, say) are added with ``watch(path)``.
* From the start of the session, every log record any logger emits is formatted and kept
  (the ``llmgw`` loggers are lowered to DEBUG so nothing of ours escapes the check).
* At the end of the session every kept log line and every file under the session's base
  temp directory (each test's ``tmp_path``: SQLite databases, JSON Lines audit files,
  configs, subprocess logs) plus the watched paths are searched for every registered
  secret, as bytes. A hit fails the session (exit status 1) and names where it was found,
  never the secret itself.

A test that deliberately writes a secret to a file (an input fixture) exempts that file
with ``secret_registry.exempt(path)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ("SecretRegistry", "scan")

_REGISTRY = pytest.StashKey["SecretRegistry"]()
#: Shorter values are too likely to occur by chance (and are not realistic secrets).
_MIN_LEN = 8
#: Files larger than this are scanned in overlapping blocks.
_BLOCK = 1 << 22


@dataclass(slots=True)
class SecretRegistry:
    secrets: set[str] = field(default_factory=set)
    roots: list[Path] = field(default_factory=list)
    watched: list[Path] = field(default_factory=list)
    exempt_paths: set[Path] = field(default_factory=set)
    log_lines: list[str] = field(default_factory=list)

    def add(self, *values: str) -> None:
        for value in values:
            if len(value) < _MIN_LEN:
                raise ValueError("register only realistic secrets (8+ characters)")
            self.secrets.add(value)

    def watch(self, path: Path) -> None:
        self.watched.append(path)

    def exempt(self, path: Path) -> None:
        self.exempt_paths.add(path.resolve())


class _Keeper(logging.Handler):
    def __init__(self, registry: SecretRegistry) -> None:
        super().__init__(level=logging.NOTSET)
        self.registry = registry
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.registry.log_lines.append(self.format(record))
        except Exception:  # a broken record must not break the test that logged it
            self.registry.log_lines.append(f"{record.name} <unformattable record>")


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _contains(path: Path, needles: list[bytes]) -> list[int]:
    overlap = max(len(n) for n in needles)
    hits: set[int] = set()
    try:
        with path.open("rb") as f:
            tail = b""
            while block := f.read(_BLOCK):
                data = tail + block
                hits.update(i for i, n in enumerate(needles) if n in data)
                tail = data[-overlap:]
    except OSError:
        return []
    return sorted(hits)


def scan(registry: SecretRegistry) -> list[str]:
    """Where registered secrets were found (descriptions; the secrets are not repeated)."""
    secrets = sorted(registry.secrets)
    if not secrets:
        return []
    found = []
    for lineno, line in enumerate(registry.log_lines):
        for i, secret in enumerate(secrets):
            if secret in line:
                found.append(f"log record #{lineno} ({line.split(' ', 1)[0]}): secret #{i}")
    needles = [s.encode() for s in secrets]
    for path in _files([*registry.roots, *registry.watched]):
        if path.resolve() in registry.exempt_paths:
            continue
        found.extend(f"file {path}: secret #{i}" for i in _contains(path, needles))
    return found


def pytest_configure(config: pytest.Config) -> None:
    registry = SecretRegistry()
    config.stash[_REGISTRY] = registry
    keeper = _Keeper(registry)
    logging.getLogger().addHandler(keeper)
    logging.getLogger("llmgw").setLevel(logging.DEBUG)


@pytest.fixture(scope="session")
def secret_registry(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> SecretRegistry:
    """The session's registry of secrets the scan must never find in output."""
    registry = pytestconfig.stash[_REGISTRY]
    base = tmp_path_factory.getbasetemp()
    if base not in registry.roots:
        registry.roots.append(base)
    return registry


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    registry = session.config.stash.get(_REGISTRY, None)
    if registry is None:
        return
    leaks = scan(registry)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not leaks:
        if reporter is not None and registry.secrets:
            reporter.write_line(
                f"secret scan: {len(registry.secrets)} secrets, {len(registry.log_lines)} log "
                "records and the session's files checked: clean"
            )
        return
    if reporter is not None:
        reporter.write_line(f"secret scan FAILED: {len(leaks)} leak(s)", red=True, bold=True)
        for leak in leaks[:50]:
            reporter.write_line(f"  {leak}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
