"""A value-over-time line chart laid out in Python, for the admin's portfolio page to
draw as inline SVG: no JavaScript and nothing fetched from elsewhere, so the page works
on a locked-down back-office network and the layout can be tested as plain numbers.

Pure Python, no Django. Coordinates are SVG user units, y growing downwards; the plot
area sits inside margins that leave room for the axis labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

LEFT, RIGHT, TOP, BOTTOM = 80, 16, 12, 28  # margins: labels go left of and below the plot


@dataclass(frozen=True, slots=True)
class Tick:
    at: float  # x for a time tick, y for a value tick
    label: str


@dataclass(frozen=True, slots=True)
class LineChart:
    width: int
    height: int
    points: tuple[tuple[float, float], ...]
    value_ticks: tuple[Tick, ...]
    time_ticks: tuple[Tick, ...]

    @property
    def left(self) -> int:
        return LEFT

    @property
    def right(self) -> int:
        return self.width - RIGHT

    @property
    def top(self) -> int:
        return TOP

    @property
    def bottom(self) -> int:
        return self.height - BOTTOM

    @property
    def polyline(self) -> str:
        """The points as an SVG ``points`` attribute: ``"x,y x,y …"``."""
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.points)


def _time_label(when: datetime, span: timedelta) -> str:
    return f"{when:%Y-%m-%d}" if span >= timedelta(days=2) else f"{when:%m-%d %H:%M}"


def line_chart(
    series: Sequence[tuple[datetime, Decimal | float]],
    *,
    width: int = 720,
    height: int = 240,
    ticks: int = 5,
) -> LineChart | None:
    """Lay out ``series`` — ``(time, value)`` pairs in time order — as one point each:
    x proportional to time (so gaps in the series show as gaps), y to value between
    the lowest and highest value. A flat series, or a single point, is drawn across the
    middle of a small band around its value. None for an empty series.

    ``ticks`` value labels run from the lowest to the highest value and ``ticks`` time
    labels from the first to the last time (one of each for a single point)."""
    if not series:
        return None
    times = [when for when, _ in series]
    values = [float(value) for _, value in series]
    low, high = min(values), max(values)
    if high == low:
        pad = max(abs(high) * 0.05, 1.0)
        low, high = low - pad, high + pad
    start, span = times[0], times[-1] - times[0]
    left, right, top, bottom = LEFT, width - RIGHT, TOP, height - BOTTOM

    def x_of(when: datetime) -> float:
        if not span:
            return (left + right) / 2
        return left + (right - left) * ((when - start) / span)

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * (value - low) / (high - low)

    points = tuple((x_of(when), y_of(value)) for when, value in zip(times, values, strict=True))
    steps = max(ticks - 1, 1)
    value_ticks = tuple(
        Tick(y_of(v), f"{v:,.2f}") for v in (low + (high - low) * i / steps for i in range(ticks))
    )
    instants = [start + span * i / steps for i in range(ticks)] if span else [start]
    time_ticks = tuple(Tick(x_of(when), _time_label(when, span)) for when in instants)
    return LineChart(
        width=width,
        height=height,
        points=points,
        value_ticks=value_ticks,
        time_ticks=time_ticks,
    )
