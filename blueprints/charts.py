"""Stacked bar charts drawn as server-side SVG: no script, no CDN, CSP-clean (F55)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

# Okabe–Ito, readable for colour-blind viewers; more labels than colours reuse them.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999")


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar]
    legend: list[tuple[str, str, str]]  # label, colour, total as text
    ticks: list[tuple[float, str]]  # y, label
    days: list[tuple[float, str]]  # x, label
    peak: int


def _nice_ceiling(value: int) -> int:
    if value <= 0:
        return 1
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return int(step * magnitude)
    return 10 * magnitude


def _count(unit: str) -> Callable[[int], str]:
    return lambda value: f"{value:,} {unit}"


def stacked(
    days: list[date],
    series: dict[str, list[int]],
    unit: str,
    fmt: Callable[[int], str] | None = None,
) -> Chart:
    """One column per day, one colour per label, stacked; `<title>` tooltips on each part.
    `fmt` writes a value (default: "1,234 <unit>")."""
    fmt = fmt or _count(unit)
    width, height, left, bottom, top = 900, 240, 64, 24, 8
    plot_w, plot_h = width - left - 8, height - bottom - top
    per_day = [sum(values[i] for values in series.values()) for i in range(len(days))]
    peak = _nice_ceiling(max(per_day, default=0))
    slot = plot_w / max(len(days), 1)
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(series)}
    bars = []
    for i, day in enumerate(days):
        base = top + plot_h
        for label, values in series.items():
            if not values[i]:
                continue
            h = plot_h * values[i] / peak
            base -= h
            bars.append(
                Bar(
                    x=round(left + i * slot + slot * 0.15, 2),
                    y=round(base, 2),
                    width=round(slot * 0.7, 2),
                    height=round(h, 2),
                    colour=colours[label],
                    title=f"{day.isoformat()} · {label}: {fmt(values[i])}",
                )
            )
    ticks = [
        (round(top + plot_h * (1 - f), 2), fmt(int(peak * f)).removesuffix(f" {unit}"))
        for f in (0, 0.5, 1)
    ]
    labels = [
        (round(left + i * slot + slot / 2, 2), day.strftime("%d %b"))
        for i, day in enumerate(days)
        if i % 5 == 0 or i == len(days) - 1
    ]
    legend = [(label, colours[label], fmt(sum(values))) for label, values in series.items()]
    return Chart(width, height, bars, legend, ticks, labels, peak)
