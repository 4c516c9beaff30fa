"""Keep aiohttp's per-stream objects on CPython's compact attribute storage.

On CPython 3.11 and 3.12 the instances of a class share one table of attribute names and
each keeps only an array of values. The table takes a new name only while it has room, and
every instance created uses up one place of that room: a heuristic for classes whose
``__init__`` sets every attribute. aiohttp's ``ClientResponse`` sets its status, headers and
reader when the response arrives, and its ``StreamWriter`` its length and chunking when
headers go out. When a gateway starts under load, many of them exist before the first sets
those names, the table closes, and every later instance falls back to a dict of its own:
measured 832 B per ``ClientResponse`` and 464 B per ``StreamWriter``, both held for as long
as a stream is open, against ~250 and ~120 B as value arrays (~0.9 KB of Python heap per
open stream; 1.1 KB of RSS per stream in ``benchmarks/relay.py``'s paced case).

:func:`prime_layouts` sets every name once on a throwaway instance before the first real one
exists, which puts all of them in the table. The names are the ones a streamed response sets
in aiohttp 3.14 (``tests/test_layouts.py`` checks that an open stream's objects keep no dict).
A name aiohttp no longer uses costs 8 bytes per instance; a new one is only not primed.
"""

from __future__ import annotations

import contextlib

from aiohttp import client_reqrep, http_writer

__all__ = ("prime_layouts",)

_LAYOUTS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (
        client_reqrep.ClientResponse,
        # __init__, then start() (the response's head), then the end of the body.
        (
            "method", "_real_url", "_url", "_stream_writer", "_ClientResponse__writer",
            "_request_info", "_timer", "_cache", "_traces", "_loop", "_session",
            "_resolve_charset", "_closed", "_protocol", "_connection", "_output_size",
            "version", "status", "reason", "_headers", "_raw_headers", "content", "_history",
            "_in_context", "_body", "_released",
        ),
    ),
    (
        http_writer.StreamWriter,
        (
            "_protocol", "loop", "_on_chunk_sent", "_on_headers_sent", "_headers_buf",
            "_headers_written", "on_body_write", "length", "chunked", "buffer_size",
            "output_size", "_eof",
        ),
    ),
)  # fmt: skip

_primed = False


def prime_layouts() -> None:
    """Put every attribute name of the per-stream aiohttp classes in their shared tables;
    once per process, before the first request (later it can only add what room is left)."""
    global _primed
    if _primed:
        return
    _primed = True
    for cls, names in _LAYOUTS:
        probe: object = object.__new__(cls)
        for name in names:
            # (a name that became a read-only property upstream is simply not primed)
            with contextlib.suppress(AttributeError):
                object.__setattr__(probe, name, None)
        # With every value None, ClientResponse.__del__ finds nothing to close.
        del probe
