"""Run the real Claude Code CLI in a sealed environment.

Each run gets a fresh HOME and working directory, inherits nothing from the parent environment
(so no real ANTHROPIC_*/AWS_*/Google credentials leak in), and routes every non-loopback
connection to a `ProxySink` that records and refuses it, so a test can assert that the CLI
talked to nothing but the URL it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ("ClaudeResult", "ProxySink", "SinkHit", "find_claude", "require_claude", "run_claude")

REPO = Path(__file__).resolve().parents[1]
_NODE_MODULES = REPO / ".ci" / "node" / "node_modules"


def _is_native_executable(path: Path) -> bool:
    # npm's `claude` shim is a placeholder script until the postinstall step has put the
    # native binary in place; only the ELF binary is usable.
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError:
        return False
    return magic == b"\x7fELF" and os.access(path, os.X_OK)


def find_claude() -> Path | None:
    """$LLMGW_CLAUDE_BIN, else the copy `.ci` installs under the repo, else None."""
    configured = os.environ.get("LLMGW_CLAUDE_BIN")
    if configured:
        return Path(configured)
    native = _NODE_MODULES / "@anthropic-ai" / "claude-code-linux-x64" / "claude"
    if native.is_file():
        return native
    shim = _NODE_MODULES / ".bin" / "claude"
    return shim if _is_native_executable(shim) else None


def require_claude() -> Path:
    """The CLI binary, or skip the test (fail instead when LLMGW_REQUIRE_E2E=1)."""
    path = find_claude()
    if path is not None and os.access(path, os.X_OK):
        return path
    reason = (
        f"Claude Code CLI not found (LLMGW_CLAUDE_BIN={os.environ.get('LLMGW_CLAUDE_BIN')!r}, "
        f"or install it under {_NODE_MODULES})"
    )
    if os.environ.get("LLMGW_REQUIRE_E2E") == "1":
        pytest.fail(f"LLMGW_REQUIRE_E2E=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkHit:
    method: str
    target: str  # `host:port` for CONNECT, an absolute URL for plain HTTP proxying
    headers: tuple[tuple[str, str], ...]


class ProxySink:
    """An HTTP(S) proxy on 127.0.0.1 that records every request line and answers 403."""

    def __init__(self) -> None:
        self.hits: list[SinkHit] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> ProxySink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            head = b""
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        headers = tuple(
            (name.strip(), value.strip())
            for name, sep, value in (line.partition(":") for line in lines[1:])
            if sep
        )
        self.hits.append(SinkHit(method=method, target=rest.rpartition(" ")[0], headers=headers))
        with contextlib.suppress(ConnectionError):
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaudeResult:
    returncode: int
    stdout: str
    stderr: str
    json: Any  # the `--output-format json` object, None when stdout was not JSON


def _sealed_env(home: str, sink: ProxySink, env: Mapping[str, str]) -> dict[str, str]:
    base = {
        "HOME": home,
        "TMPDIR": home,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "2",
        "NO_PROXY": "127.0.0.1,localhost,::1",
        "no_proxy": "127.0.0.1,localhost,::1",
    }
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        base[name] = sink.url
    return base | dict(env)


@contextlib.contextmanager
def _sandbox() -> Iterator[tuple[str, str]]:
    """A fresh HOME and working directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="llmgw-cc-") as tmp:
        home, work = os.path.join(tmp, "home"), os.path.join(tmp, "work")
        os.mkdir(home)
        os.mkdir(work)
        yield home, work


def _write_settings(home: str, settings: Mapping[str, Any]) -> None:
    os.mkdir(os.path.join(home, ".claude"))
    with open(os.path.join(home, ".claude", "settings.json"), "w", encoding="utf-8") as f:
        json.dump(dict(settings), f)


async def run_claude(
    prompt: str,
    *,
    env: Mapping[str, str],
    sink: ProxySink,
    timeout: float = 90,  # noqa: ASYNC109 - on expiry the process group must be killed too
    settings: Mapping[str, Any] | None = None,
) -> ClaudeResult:
    """`claude -p PROMPT --output-format json` with only `env` on top of the sealed defaults.

    ``settings`` becomes the fresh HOME's ``~/.claude/settings.json`` (the user settings
    file, where e.g. ``apiKeyHelper`` lives)."""
    binary = require_claude()
    with _sandbox() as (home, work):
        if settings is not None:
            _write_settings(home, settings)
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            "-p",
            prompt,
            "--output-format",
            "json",
            cwd=work,
            env=_sealed_env(home, sink, env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so a kill takes its children too
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            if isinstance(exc, TimeoutError):
                pytest.fail(f"claude did not finish within {timeout} s", pytrace=False)
            raise
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    try:
        parsed = json.loads(stdout)
    except ValueError:
        parsed = None
    assert proc.returncode is not None
    return ClaudeResult(returncode=proc.returncode, stdout=stdout, stderr=stderr, json=parsed)
