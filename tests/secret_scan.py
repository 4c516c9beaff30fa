"""Session-wide check that no secret a test used leaked into a log line or an output file.

How it works (a pytest plugin loaded by ``tests/conftest.py``):

* Tests register every secret they hand to the gateway (client keys, provider keys, admin
  credentials, JWT signing secrets) with the session's :class:`SecretRegistry`, through the
  ``secret_registry`` fixture: ``secret_registry.add(value)``; files a test writes outside
  its ``tmp_path`` (a subprocess's captured output, say) are added with ``watch(path)``.
* Secrets are also registered without the test asking: after each test's setup and call,
  every environment variable the session did not start with (``monkeypatch.setenv`` in a
  test or fixture) whose name says it holds a secret (``*KEY*``, ``*SECRET*``, ``*TOKEN*``,
  ``*PASSWORD*``, ``*CREDENTIAL*``; not ``*_ID``, ``*_ENV``, ``*_URL``, paths...) is added.
* A whole llmgw virtual key (``sk-llmgw-`` and 20+ key characters) in a log line is a leak
  whether or not it was registered; the display form ``sk-llmgw-...abcd`` is not.
* From the start of the session, every log record any logger emits is formatted and kept
  (the ``llmgw`` loggers are lowered to DEBUG so nothing of ours escapes the check).
* At the end of the session every kept log line and every file under the session's base
  temp directory (each test's ``tmp_path``: SQLite databases, JSON Lines audit files,
  configs, subprocess logs) plus the watched paths are searched for every registered
  secret, as bytes. A hit fails the session (exit status 1) and names where it was found,
  never the secret itself.

A test that deliberately writes a secret to a file (an input fixture) exempts that file
with ``secret_registry.exempt(path)``.

Output must go under the session's temp directory, where it is scanned: a database,
journal or JSON Lines file created or changed in the root or invocation directory during
the session (a gateway run with the default ``sqlite:///llmgw.db`` from the repository, say)
fails the session too.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmgw.auth.keys import KEY_PREFIX

__all__ = ("SecretRegistry", "scan", "secret_env_values", "stray_files")

_REGISTRY = pytest.StashKey["SecretRegistry"]()
#: Shorter values are too likely to occur by chance (and are not realistic secrets).
_MIN_LEN = 8
#: Files larger than this are scanned in overlapping blocks.
_BLOCK = 1 << 22
_SECRET_ENV = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL", re.IGNORECASE)
_NOT_SECRET_ENV = re.compile(
    r"(?:_ID|_ENV|_URL|_PATH|_FILE|_DIR|_NAME|_REGION|_PREFIX|_HEADER)$", re.IGNORECASE
)
_VIRTUAL_KEY = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_\-]{20,}")
#: Output files that belong under a tmp dir, never in the working tree.
_OUTPUT_GLOBS = ("*.db", "*.db-wal", "*.db-shm", "*.db-journal", "*.journal", "*.jsonl")


@dataclass(slots=True)
class SecretRegistry:
    secrets: set[str] = field(default_factory=set)
    roots: list[Path] = field(default_factory=list)
    watched: list[Path] = field(default_factory=list)
    exempt_paths: set[Path] = field(default_factory=set)
    log_lines: list[str] = field(default_factory=list)
    #: The environment at session start (its values are not the tests' secrets).
    base_env: dict[str, str] = field(default_factory=dict)
    #: Output files in the working tree at session start: path → mtime.
    tree_files: dict[Path, int] = field(default_factory=dict)
    tree_dirs: list[Path] = field(default_factory=list)

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


def secret_env_values(env: dict[str, str], base: dict[str, str]) -> set[str]:
    """Values of secret-named variables in ``env`` that ``base`` does not have."""
    found = set()
    for name, value in env.items():
        if base.get(name) == value or len(value) < _MIN_LEN:
            continue
        if not _SECRET_ENV.search(name) or _NOT_SECRET_ENV.search(name):
            continue
        if value.startswith(("/", "./", "~")) or (os.sep in value and Path(value).exists()):
            continue  # a path to a credentials file, not the secret itself
        found.add(value)
    return found


def _tree_outputs(dirs: Iterable[Path]) -> dict[Path, int]:
    found = {}
    for d in dirs:
        for pattern in _OUTPUT_GLOBS:
            for path in d.glob(pattern):
                try:
                    found[path] = path.stat().st_mtime_ns
                except OSError:
                    continue
    return found


def stray_files(registry: SecretRegistry) -> list[Path]:
    """Output files created or changed in the working tree since the session started."""
    now = _tree_outputs(registry.tree_dirs)
    return sorted(p for p, mtime in now.items() if registry.tree_files.get(p) != mtime)


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
    """Where registered secrets (or virtual keys, in logs) were found; the secrets
    themselves are not repeated."""
    secrets = sorted(registry.secrets)
    found: list[str] = []
    for lineno, line in enumerate(registry.log_lines):
        where = f"log record #{lineno} ({line.split(' ', 1)[0]})"
        hits = [i for i, secret in enumerate(secrets) if secret in line]
        found.extend(f"{where}: secret #{i}" for i in hits)
        if not hits and _VIRTUAL_KEY.search(line):
            found.append(f"{where}: a whole llmgw virtual key")
    if not secrets:
        return found
    needles = [s.encode() for s in secrets]
    for path in _files([*registry.roots, *registry.watched]):
        if path.resolve() in registry.exempt_paths:
            continue
        found.extend(f"file {path}: secret #{i}" for i in _contains(path, needles))
    return found


def pytest_configure(config: pytest.Config) -> None:
    registry = SecretRegistry(base_env=dict(os.environ))
    registry.tree_dirs = sorted({config.rootpath.resolve(), config.invocation_params.dir.resolve()})
    registry.tree_files = _tree_outputs(registry.tree_dirs)
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


def _register_env(config: pytest.Config) -> None:
    registry = config.stash.get(_REGISTRY, None)
    if registry is not None:
        registry.secrets |= secret_env_values(dict(os.environ), registry.base_env)


# Wrappers: after setup and after the call, before teardown undoes monkeypatch.setenv.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        _register_env(item.config)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        _register_env(item.config)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    registry = session.config.stash.get(_REGISTRY, None)
    if registry is None:
        return
    leaks = scan(registry)
    leaks += [
        f"file {p}: written into the working tree (tests must write under tmp_path)"
        for p in stray_files(registry)
    ]
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
