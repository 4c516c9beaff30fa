"""Giving the memory of released request bodies back to the operating system.

glibc serves allocations below its mmap threshold (which grows, up to 32 MiB, with the
largest block freed) from the heap and keeps what is freed there for reuse. A burst of large
request bodies (Claude Code's are ~100 KB, megabytes with images) therefore leaves the
process at its peak RSS after the relay has released every one of them. ``malloc_trim(0)``
returns the free pages: ~0.15 ms per call on the benchmark machine, so it runs at most once
per ``interval`` after a large body was released, never per request.

Process-wide, so off unless :func:`enable` is called: ``llmgw serve`` does
(``[server] malloc_trim``); an application that embeds llmgw decides for itself. A no-op
where the C library has no ``malloc_trim`` (musl, macOS).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import time
from collections.abc import Callable

__all__ = ("LARGE_BODY", "disable", "enable", "released")

#: Bodies at least this large are worth a trim; smaller blocks are reused as they are.
LARGE_BODY = 64 * 1024

_trim: Callable[[int], int] | None = None
_interval = 0.5
_next_at = 0.0
#: Trims run so far in this process.
trims = 0


def enable(interval: float = 0.5) -> bool:
    """Trim at most every ``interval`` seconds after large bodies are released; ``False``
    when the C library cannot."""
    global _trim, _interval
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        _trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        _trim = None
        return False
    _interval = interval
    return True


def disable() -> None:
    global _trim, _next_at
    _trim = None
    _next_at = 0.0


def released(size: int) -> None:
    """The relay let go of a request body of ``size`` bytes."""
    global _next_at
    if _trim is None or size < LARGE_BODY:
        return
    now = time.monotonic()
    if now < _next_at:
        return  # one is scheduled or ran within the interval: it covers this one too
    _next_at = now + _interval
    asyncio.get_running_loop().call_later(_interval, _run)


def _run() -> None:
    global trims
    if _trim is not None:
        _trim(0)
        trims += 1
