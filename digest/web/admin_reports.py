"""The subscribers page's chart: bar geometry for inline SVG (the figures: digest.pipeline.reports).

Bars per week, sign-ups above the axis, leaves below, so the page needs no JavaScript and no inline
style.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..pipeline.reports import WeekCounts


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    axis_y: float
    signups: list[Bar]
    leaves: list[Bar]
    ticks: list[tuple[float, str]]
    peak: int
    bar_width: float


def weekly_chart(weeks: list[WeekCounts], width: int = 720, height: int = 220) -> Chart:
    """Bar geometry: sign-ups rise from the middle axis, leaves hang below it."""
    peak = max([1] + [max(w.signups, w.leaves) for w in weeks])
    left, bottom_pad = 36.0, 24.0
    half = (height - bottom_pad) / 2
    axis = half
    slot = (width - left) / max(1, len(weeks))
    bar = slot * 0.36
    signups, leaves, ticks = [], [], []
    for i, week in enumerate(weeks):
        x = left + i * slot + slot * 0.12
        up = half * 0.92 * week.signups / peak
        down = half * 0.92 * week.leaves / peak
        label = week.week.strftime("%d %b")
        signups.append(Bar(x, axis - up, up, f"week of {label}: {week.signups} sign-ups"))
        leaves.append(Bar(x + bar, axis, down, f"week of {label}: {week.leaves} left"))
        if i % 2 == 0 or len(weeks) <= 8:
            ticks.append((x + bar, label))
    return Chart(width, height, axis, signups, leaves, ticks, peak, bar)
