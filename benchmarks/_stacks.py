"""Summarize a py-spy raw profile (`relay.py --profile DIR`): `python _stacks.py FILE [N]`.

Prints the N functions with the most samples on top of the stack (self) and anywhere on it
(inclusive), line numbers folded, as a share of the main thread's samples (worker threads, such
as aiosqlite's, are counted apart: py-spy sees their polling as busy).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

__all__ = ("main", "summarize")

_LINE = re.compile(r":\d+\)$")


def summarize(text: str) -> tuple[int, int, Counter[str], Counter[str]]:
    """(main-thread samples, other samples, self counts, inclusive counts) by function."""
    total = others = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        if "(threading.py)" in frames[0]:
            others += n
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return total, others, own, inclusive


def main(argv: list[str]) -> int:
    total, others, own, inclusive = summarize(Path(argv[1]).read_text())
    print(f"main thread: {total} samples; other threads: {others}")
    top = int(argv[2]) if len(argv) > 2 else 25
    for title, counts in (("self", own), ("inclusive", inclusive)):
        print(f"-- {title} ({total} samples)")
        for frame, n in counts.most_common(top):
            print(f"{100 * n / total:6.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
