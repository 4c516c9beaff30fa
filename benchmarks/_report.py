"""The metrics `relay.py` reports and the one table of medians, with the targets checked."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from _targets import Cell, Goal

__all__ = ("Metric", "Roles", "Sample", "metrics_for", "percentile", "render", "summarize")

#: One repeat of one variant: metric key → raw value.
Sample = dict[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    case: str
    key: str
    label: str
    unit: str
    digits: int = 1
    #: Reported as variant - baseline of the same repeat (the cost a proxy adds); the
    #: baseline row shows its absolute value for scale.
    added: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Roles:
    """Which rows one variant is compared with (`None`: not compared)."""

    #: Subtracted from added metrics, the `xdirect` column: `direct` (or `direct-bedrock`).
    baseline: str | None = None
    #: The `xnaive` column and relay targets: `naive` (or `naive-bedrock`).
    reference: str | None = None
    #: The `vs llmgw` column and feature targets: the bare `llmgw` row.
    bare: str | None = None


def metrics_for(cases: Iterable[str], concurrencies: Sequence[int]) -> list[Metric]:
    """Every row of the table, in order, for the selected cases."""
    out: list[Metric] = []
    for case in cases:
        if case == "short":
            for c in concurrencies:
                out += [
                    Metric(
                        case=case, key=f"short.c{c}.rps", label=f"c={c} req/s", unit="", digits=0
                    ),
                    Metric(
                        case=case,
                        key=f"short.c{c}.ttfb_p50",
                        label=f"c={c} added TTFB p50",
                        unit="ms",
                        digits=2,
                        added=True,
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
                    Metric(case=case, key=f"large.x{n}.mbps", label=f"{label} MB/s", unit=""),
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
                ),
                Metric(case=case, key="paced.ttfe_p99", label="time to first event p99", unit="ms"),
                Metric(case=case, key="paced.rss_kb", label="gateway RSS/open stream", unit="KB"),
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


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _paired(
    mine: Sequence[Sample], other: Sequence[Sample], key: str, *, diff: bool
) -> list[float]:
    """Per repeat, mine - other (diff) or mine / other, where both measured `key`."""
    out = []
    for a, b in zip(mine, other, strict=False):
        if key in a and key in b:
            if diff:
                out.append(a[key] - b[key])
            elif b[key] > 0:
                out.append(a[key] / b[key])
    return out


def summarize(
    samples: Mapping[str, Sequence[Sample]],
    metrics: Sequence[Metric],
    roles: Mapping[str, Roles],
) -> dict[str, dict[str, Cell]]:
    """Median over repeats per variant and metric, and the comparisons of `roles`.

    Differences and ratios are taken within a repeat, then the median of those: rows measured
    in the same repeat share whatever the machine was doing then.
    """
    shown: dict[str, dict[str, tuple[float, float]]] = {}
    for variant, repeats in samples.items():
        role = roles.get(variant, Roles())
        base = samples.get(role.baseline or "", ())
        row: dict[str, tuple[float, float]] = {}
        for metric in metrics:
            absolute = _median([s[metric.key] for s in repeats if metric.key in s])
            if absolute is None:
                continue
            value: float | None = absolute
            if metric.added and role.baseline is not None:
                value = _median(_paired(repeats, base, metric.key, diff=True))
            if value is not None:
                row[metric.key] = (value, absolute)
        shown[variant] = row
    out: dict[str, dict[str, Cell]] = {}
    for variant, row in shown.items():
        role = roles.get(variant, Roles())
        bare = samples.get(role.bare or "", ())
        cells = {}
        for metric in metrics:
            if metric.key not in row:
                continue
            value, absolute = row[metric.key]
            reference = shown.get(role.reference or "", {}).get(metric.key)
            bare_row = shown.get(role.bare or "", {}).get(metric.key)
            cells[metric.key] = Cell(
                value=value,
                absolute=absolute,
                reference=reference[0] if reference else None,
                bare_absolute=bare_row[1] if bare_row else None,
                vs_bare=_median(_paired(samples[variant], bare, metric.key, diff=metric.added))
                if role.bare is not None
                else None,
            )
        out[variant] = cells
    return out


def _ratio(value: float, ref: float | None) -> str:
    if ref is None or ref <= 0:
        return ""
    return f"{value / ref:.2f}x"


def _vs_bare(metric: Metric, cell: Cell) -> str:
    if cell.vs_bare is None:
        return ""
    if metric.added:
        return f"{cell.vs_bare:+.{max(metric.digits, 2)}f} {metric.unit}"
    return f"{cell.vs_bare:.2f}x"


def render(
    cells: Mapping[str, Mapping[str, Cell]],
    metrics: Sequence[Metric],
    *,
    roles: Mapping[str, Roles],
    goals: Mapping[str, Sequence[Goal]],
    measured: Mapping[str, float],
) -> tuple[str, list[str]]:
    """The table, and a list of the targets missed (`variant: metric = value (target)`)."""
    header = (
        f"{'case':<6} {'metric':<24} {'variant':<20} {'value':>12}  "
        f"{'xdirect':>7} {'xnaive':>6} {'vs llmgw':>9}  target"
    )
    lines = [header, "-" * len(header)]
    missed: list[str] = []
    previous_case = ""
    for metric in metrics:
        present = [v for v in cells if metric.key in cells[v]]
        if not present:
            continue
        if metric.case != previous_case and previous_case:
            lines.append("")
        first = True
        for variant in present:
            cell = cells[variant][metric.key]
            role = roles.get(variant, Roles())
            base = cells.get(role.baseline or "", {}).get(metric.key)
            x_direct = "" if metric.added or base is None else _ratio(cell.value, base.value)
            x_naive = _ratio(cell.value, cell.reference)
            verdicts = []
            for goal in goals.get(variant, ()):
                target = goal(metric.key, measured)
                if target is None:
                    continue
                ok = target.check(cell)
                verdicts.append(
                    f"{target.text} " + {True: "ok", False: "MISSED", None: "(not compared)"}[ok]
                )
                if ok is False:
                    missed.append(
                        f"{variant}: {metric.case} {metric.label} = "
                        f"{cell.value:.{metric.digits}f} {metric.unit} ({target.text})"
                    )
            shown = f"{cell.value:,.{metric.digits}f} {metric.unit}".rstrip()
            if metric.added and role.baseline is None:
                shown = f"({cell.value:,.{metric.digits}f} abs)"
            lines.append(
                f"{metric.case if first and metric.case != previous_case else '':<6} "
                f"{metric.label if first else '':<24} {variant:<20} {shown:>12}  "
                f"{x_direct:>7} {x_naive:>6} {_vs_bare(metric, cell):>9}  "
                f"{'; '.join(verdicts)}".rstrip()
            )
            first = False
        previous_case = metric.case
    return "\n".join(lines), missed
