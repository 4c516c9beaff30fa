"""``llmgw serve`` and ``llmgw check-config`` as real processes, as a user runs them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from anthropic import AsyncAnthropic
from anthropic.types import MessageParam

LISTENING = re.compile(rb"llmgw listening on (http://\S+)")
STARTUP = 20.0


def _env() -> dict[str, str]:
    """The parent's environment minus any provider credential (a fresh machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "AWS_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.asynccontextmanager
async def llmgw_serve(
    *args: str, cwd: Path, log_level: str = "INFO", stderr: list[str] | None = None
) -> AsyncIterator[str]:
    """``python -m llmgw serve --port 0 ARGS``; yields its base URL, stops it by its PID,
    then appends what it wrote to stderr to ``stderr`` (when given)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgw",
        "--log-level",
        log_level,
        "serve",
        "--port",
        "0",
        *args,
        cwd=cwd,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), STARTUP)
        match = LISTENING.search(line)
        if match is None:
            assert proc.stderr is not None
            err = await asyncio.wait_for(proc.stderr.read(), STARTUP)
            pytest.fail(f"no listening line: {line!r}\n{err.decode(errors='replace')}")
        yield match.group(1).decode()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0  # SIGTERM is a clean shutdown
    if stderr is not None:
        assert proc.stderr is not None
        stderr.append((await proc.stderr.read()).decode(errors="replace"))


async def test_serve_without_credentials_answers_from_the_demo_upstream(tmp_path: Path) -> None:
    user: list[MessageParam] = [{"role": "user", "content": "ping"}]
    async with (
        llmgw_serve(cwd=tmp_path) as url,
        AsyncAnthropic(base_url=url, api_key="anything", max_retries=0) as client,
    ):
        message = await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=50, messages=user
        )
        async with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=50, messages=user
        ) as stream:
            streamed = "".join([piece async for piece in stream.text_stream])

    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the llmgw demo upstream. You said: ping"
    assert streamed == message.content[0].text


async def test_serve_with_a_config_file_uses_its_settings(tmp_path: Path) -> None:
    config = tmp_path / "llmgw.toml"
    config.write_text(
        '[server]\nanthropic_prefixes = ["/anthropic"]\n[storage]\nurl = "sqlite://:memory:"\n'
    )
    async with (
        llmgw_serve("-c", str(config), cwd=tmp_path) as url,
        AsyncAnthropic(base_url=url + "/anthropic", api_key="anything", max_retries=0) as client,
    ):
        count = await client.messages.count_tokens(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]
        )
    assert count.input_tokens > 0


@pytest.mark.parametrize(("level", "lines"), [("INFO", 1), ("WARNING", 0)])
async def test_serve_logs_one_access_line_per_request_at_info_only(
    tmp_path: Path, level: str, lines: int
) -> None:
    """At WARNING the connections carry no access logger at all (~0.1 KB each)."""
    logged: list[str] = []
    async with (
        llmgw_serve(cwd=tmp_path, log_level=level, stderr=logged) as url,
        AsyncAnthropic(base_url=url, api_key="anything", max_retries=0) as client,
    ):
        await client.messages.count_tokens(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]
        )
    (text,) = logged
    assert text.count('"POST /v1/messages/count_tokens HTTP/1.1" 200') == lines


async def _check_config(path: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgw",
        "check-config",
        str(path),
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), STARTUP)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(
        '[providers.anthropic]\nbase_url = "http://127.0.0.1:1"\n'
        '[[routes]]\nmodel = "claude-sonnet-4-6"\n'
        '[[routes.deployments]]\nprovider = "anthropic"\n'
    )
    code, out, err = await _check_config(path)
    assert (code, err) == (0, "")
    assert out == f"{path}: ok\n"


async def test_check_config_names_the_bad_key_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "[providers.anthropic]\n"
        '[[routes]]\nmodel = "a"\n[[routes.deployments]]\nprovider = "anthropic"\n'
        '[[routes]]\nmodel = "b"\n[[routes.deployments]]\nprovider = "anthropic"\n'
        'weight = "heavy"\n'
    )
    code, out, err = await _check_config(path)
    assert code == 2
    assert out == ""
    assert (
        err == "llmgw: config error: routes[1].deployments[0].weight: expected a number, got str\n"
    )
