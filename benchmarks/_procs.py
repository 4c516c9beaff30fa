"""The child processes of a `relay.py` run: start, wait for ready, measure, stop by PID."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from _servers import ROOT
from _variants import BENCH_KEY_SHA256, NAIVE, Variant, render_config

__all__ = (
    "SERVERS",
    "BenchError",
    "Child",
    "cpu_seconds",
    "profiled",
    "proxy_argv",
    "rss_bytes",
    "slug",
    "start_child",
    "start_upstream",
    "stop_child",
)

SERVERS = Path(__file__).resolve().parent / "_servers.py"
_READY = re.compile(rb"listening on (http://\S+)")
_TICK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


@dataclass(slots=True, kw_only=True)
class Child:
    name: str
    proc: asyncio.subprocess.Process
    url: str
    ready_line: str
    log: Path


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name)


async def start_child(
    name: str,
    argv: Sequence[str],
    *,
    cpu: int | None,
    logdir: Path,
    children: list[Child],
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 30,
) -> Child:
    """Start `argv`, pinned to `cpu`, and wait for its `listening on http://...` line."""
    log = logdir / f"{slug(name)}.log"
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, (str(ROOT), str(SERVERS.parent), environ.get("PYTHONPATH")))
    )
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=err, cwd=ROOT, env=environ
        )
    child = Child(name=name, proc=proc, url="", ready_line="", log=log)
    children.append(child)
    if cpu is not None:
        # Before the child starts any thread: its threads inherit the mask.
        os.sched_setaffinity(proc.pid, {cpu})
    try:
        async with asyncio.timeout(ready_timeout):
            child.url, child.ready_line = await _ready(child)
    except TimeoutError:
        raise BenchError(
            f"{name} did not start within {ready_timeout:g} s:\n{_tail(log)}"
        ) from None
    return child


async def start_upstream(*, cpu: int | None, logdir: Path, children: list[Child]) -> Child:
    """The fast fake provider (`_servers.py upstream`), every script's first child."""
    argv = [sys.executable, str(SERVERS), "upstream"]
    return await start_child("upstream", argv, cpu=cpu, logdir=logdir, children=children)


async def _ready(child: Child) -> tuple[str, str]:
    """The URL from the child's `listening on http://...` line, and the line."""
    assert child.proc.stdout is not None
    while True:
        line = await child.proc.stdout.readline()
        if not line:
            raise BenchError(f"{child.name} exited before listening:\n{_tail(child.log)}")
        match = _READY.search(line)
        if match is not None:
            return match.group(1).decode(), line.decode().strip()


async def stop_child(child: Child, children: list[Child]) -> None:
    """SIGTERM by PID, SIGKILL after 10 s; reports anything the child wrote to stderr."""
    proc = child.proc
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if child in children:
        children.remove(child)
    tail = _tail(child.log)
    if tail:
        print(f"  note: {child.name} wrote to stderr:\n{tail}", file=sys.stderr)


def proxy_argv(
    variant: Variant, workdir: Path, *, upstream: str, redis: str, prefix: str
) -> list[str]:
    """How to start ``variant`` in front of ``upstream``: the naive proxy, ``llmgw serve``
    as shipped, or an app factory; an llmgw config goes to ``workdir`` (fresh per start)."""
    if variant.kind == NAIVE:
        return [sys.executable, str(SERVERS), "naive", "--upstream", upstream]
    config = workdir / "llmgw.toml"
    config.write_text(
        render_config(
            variant,
            upstream=upstream,
            dir=str(workdir),
            redis=redis,
            prefix=prefix,
            key_sha256=BENCH_KEY_SHA256,
        )
    )
    if variant.app_factory is not None:
        factory = ["--factory", variant.app_factory]
        return [sys.executable, str(SERVERS), "gateway", "-c", str(config), *factory]
    # WARNING: at INFO, `llmgw serve` logs one access line per request.
    serve = ["serve", "-c", str(config), "--host", "127.0.0.1", "--port", "0"]
    return [sys.executable, "-m", "llmgw", "--log-level", "WARNING", *serve]


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid` (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


@contextlib.asynccontextmanager
async def profiled(out: Path | None, pid: int | None, *, cpu: int | None) -> AsyncIterator[None]:
    """py-spy on `pid` for the duration of the block, raw stacks to `out` (`--profile`)."""
    if out is None or pid is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    argv = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "-o", str(out)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        if cpu is not None:
            os.sched_setaffinity(proc.pid, {cpu})
        await asyncio.sleep(0.5)  # attached before the load starts
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        print(f"  profile: {out}", file=sys.stderr)
