"""The metrics `relay.py` reports, their targets, and the one table of medians."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ("Metric", "Target", "metrics_for", "percentile", "render", "summarize")

#: One repeat of one variant: metric key → raw value.
Sample = dict[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """What a gateway variant must reach; `check(value, naive)` (naive may be unknown)."""

    text: str
    check: Callable[[float, float | None], bool]
    #: Judged against the naive proxy's value (not checked when naive did not run).
    relative: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    case: str
    key: str
    label: str
    unit: str
    digits: int = 1
    #: Reported as variant - direct of the same repeat (the cost a proxy adds); the direct
    #: row shows its absolute value for scale.
    added: bool = False
    target: Target | None = None


def _at_least(fraction: float) -> Target:
    return Target(
        text=f">= {fraction:g}x naive",
        check=lambda v, naive: naive is None or v >= fraction * naive,
    )


def _at_most(fraction: float) -> Target:
    return Target(
        text=f"<= {fraction:g}x naive",
        check=lambda v, naive: naive is None or v <= fraction * naive,
    )


def _within(ms: float) -> Target:
    return Target(
        text=f"<= naive + {ms:g} ms",
        check=lambda v, naive: naive is None or v <= naive + ms,
    )


def _below(limit: float, unit: str) -> Target:
    return Target(text=f"<= {limit:g} {unit}", check=lambda v, naive: v <= limit, relative=False)


def metrics_for(cases: Iterable[str], concurrencies: Sequence[int]) -> list[Metric]:
    """Every row of the table, in order, for the selected cases."""
    out: list[Metric] = []
    for case in cases:
        if case == "short":
            for c in concurrencies:
                out += [
                    Metric(
                        case=case,
                        key=f"short.c{c}.rps",
                        label=f"c={c} req/s",
                        unit="",
                        digits=0,
                        target=_at_least(0.9),
                    ),
                    Metric(
                        case=case,
                        key=f"short.c{c}.ttfb_p50",
                        label=f"c={c} added TTFB p50",
                        unit="ms",
                        digits=2,
                        added=True,
                        target=_at_most(1.2),
                    ),
                    Metric(
                        case=case,
                        key=f"short.c{c}.ttfb_p99",
                        label=f"c={c} added TTFB p99",
                        unit="ms",
                        digits=2,
                        added=True,
                    ),
                ]
            out.append(Metric(case=case, key="short.cpu", label="gateway CPU/request", unit="us"))
        elif case == "large":
            for n, label in ((1, "1 stream"), (8, "8 streams")):
                out += [
                    Metric(
                        case=case,
                        key=f"large.x{n}.mbps",
                        label=f"{label} MB/s",
                        unit="",
                        target=_at_least(0.9),
                    ),
                    Metric(
                        case=case,
                        key=f"large.x{n}.eps",
                        label=f"{label} events/s",
                        unit="",
                        digits=0,
                    ),
                ]
            out.append(
                Metric(case=case, key="large.cpu", label="gateway CPU/request", unit="ms", digits=2)
            )
        elif case == "paced":
            out += [
                Metric(
                    case=case,
                    key="paced.late_p99",
                    label="added lateness p99/event",
                    unit="ms",
                    digits=2,
                    added=True,
                    target=_within(2.0),
                ),
                Metric(
                    case=case,
                    key="paced.ttfe_p99",
                    label="time to first event p99",
                    unit="ms",
                    digits=1,
                ),
                Metric(
                    case=case,
                    key="paced.rss_kb",
                    label="gateway RSS/open stream",
                    unit="KB",
                    target=_below(30, "KB"),
                ),
                Metric(
                    case=case, key="paced.cpu", label="gateway CPU/request", unit="ms", digits=2
                ),
            ]
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted `values`."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summarize(
    samples: Mapping[str, Sequence[Sample]], metrics: Sequence[Metric], *, baseline: str
) -> dict[str, dict[str, float]]:
    """Median over repeats per variant and metric; added metrics subtract the baseline first."""
    out: dict[str, dict[str, float]] = {}
    base = samples.get(baseline, ())
    for variant, repeats in samples.items():
        row: dict[str, float] = {}
        for metric in metrics:
            values = []
            for i, sample in enumerate(repeats):
                if metric.key not in sample:
                    continue
                value = sample[metric.key]
                if metric.added and variant != baseline:
                    if i >= len(base) or metric.key not in base[i]:
                        continue
                    value -= base[i][metric.key]
                values.append(value)
            if values:
                row[metric.key] = statistics.median(values)
        out[variant] = row
    return out


def _ratio(value: float, ref: float | None) -> str:
    if ref is None or ref <= 0:
        return ""
    return f"{value / ref:.2f}x"


def render(
    medians: Mapping[str, Mapping[str, float]],
    metrics: Sequence[Metric],
    *,
    direct: str,
    naive: str,
    targeted: Callable[[str], bool],
) -> tuple[str, list[str]]:
    """The table, and a list of the targets missed (`variant: metric value vs target`)."""
    header = (
        f"{'case':<6} {'metric':<27} {'variant':<18} {'value':>12}  "
        f"{'xdirect':>8} {'xnaive':>7}  target"
    )
    lines = [header, "-" * len(header)]
    missed: list[str] = []
    previous_case = ""
    for metric in metrics:
        present = [v for v in medians if metric.key in medians[v]]
        if not present:
            continue
        if metric.case != previous_case and previous_case:
            lines.append("")
        first = True
        for variant in present:
            value = medians[variant][metric.key]
            direct_value = medians.get(direct, {}).get(metric.key)
            naive_value = medians.get(naive, {}).get(metric.key)
            x_direct = "" if metric.added or variant == direct else _ratio(value, direct_value)
            x_naive = "" if variant in (direct, naive) else _ratio(value, naive_value)
            verdict = ""
            if metric.target is None or not targeted(variant):
                pass
            elif metric.target.relative and naive_value is None:
                verdict = f"{metric.target.text}  (naive not run)"
            else:
                ok = metric.target.check(value, naive_value)
                verdict = f"{metric.target.text}  {'ok' if ok else 'MISSED'}"
                if not ok:
                    missed.append(f"{variant}: {metric.case} {metric.label} = {value:.2f}")
            shown = f"{value:,.{metric.digits}f} {metric.unit}".rstrip()
            if metric.added and variant == direct:
                shown = f"({value:,.{metric.digits}f} abs)"
            lines.append(
                f"{metric.case if first and metric.case != previous_case else '':<6} "
                f"{metric.label if first else '':<27} {variant:<18} {shown:>12}  "
                f"{x_direct:>8} {x_naive:>7}  {verdict}".rstrip()
            )
            first = False
        previous_case = metric.case
    return "\n".join(lines), missed
