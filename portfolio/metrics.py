"""Performance and risk statistics of a portfolio from its snapshot series.

Pure Python, no Django: callers pass plain numbers. These are statistics, not money, so
they are computed in ``float`` (callers convert the snapshots' ``Decimal`` values with
``float()``); nothing here is ever posted to the ledger.

Conventions, stated once:

- A series is a list of ``Point(value, net_flow)`` in time order, one per snapshot:
  ``value`` is the portfolio's total value at the end of the period and ``net_flow``
  the deposits minus withdrawals during it, both in the quote asset.
- A period's return is net of flows, with flows taken to arrive at the end of the
  period: ``r = (value - net_flow) / previous_value - 1``. A period whose previous
  value is not positive (an empty account funded for the first time) has no return
  and is left out.
- Returns are fractions (0.05 is 5 %); annualising multiplies by ``periods_per_year``
  (365 for daily snapshots: the venue trades every day) or its square root.
- Sample statistics (``n - 1``) for the standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True, slots=True)
class Point:
    value: float
    net_flow: float = 0.0


def period_returns(points: Sequence[Point]) -> list[float]:
    """Each period's return net of its flows (see the module's conventions)."""
    returns = []
    for previous, current in pairwise(points):
        if previous.value > 0:
            returns.append((current.value - current.net_flow) / previous.value - 1)
    return returns


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _stdev(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def volatility(returns: Sequence[float], periods_per_year: float | None = None) -> float | None:
    """The sample standard deviation of the returns, annualised by the square root of
    ``periods_per_year`` when given; None with fewer than two returns."""
    stdev = _stdev(returns)
    if stdev is None:
        return None
    return stdev * math.sqrt(periods_per_year) if periods_per_year else stdev


def sharpe_ratio(
    returns: Sequence[float], *, periods_per_year: float, risk_free_rate: float = 0.0
) -> float | None:
    """Annualised Sharpe ratio: the mean excess return per period over its standard
    deviation, times the square root of ``periods_per_year``. ``risk_free_rate`` is
    annual and spread evenly over the periods. None when it is undefined (fewer than
    two returns, or no variation at all)."""
    stdev = _stdev(returns)
    if not stdev:
        return None
    excess = _mean(returns) - risk_free_rate / periods_per_year
    return excess / stdev * math.sqrt(periods_per_year)


def max_drawdown(returns: Sequence[float]) -> float:
    """The largest fall from a peak, as a fraction of the peak, of the growth of one
    unit invested (so deposits and withdrawals are neither gains nor drawdowns)."""
    wealth = peak = 1.0
    worst = 0.0
    for r in returns:
        wealth *= 1 + r
        peak = max(peak, wealth)
        worst = max(worst, (peak - wealth) / peak)
    return worst


def value_at_risk(returns: Sequence[float], confidence: float = 0.95) -> float | None:
    """Historical value at risk over one period: the loss (a fraction of the
    portfolio's value, positive for a loss) that the period's returns exceeded only
    ``1 - confidence`` of the time. The nearest-rank quantile: the ``k``-th worst
    return with ``k = ceil((1 - confidence) * n)``, at least the worst. None without
    returns. With daily snapshots this is the 1-day VaR."""
    if not returns:
        return None
    k = max(1, math.ceil(round((1 - confidence) * len(returns), 9)))
    return -sorted(returns)[k - 1]


def win_rate(realized_gains: Sequence[float]) -> float | None:
    """The fraction of disposals that realized a gain (a zero gain is not a win)."""
    if not realized_gains:
        return None
    return sum(1 for g in realized_gains if g > 0) / len(realized_gains)


def average_trade_size(notionals: Sequence[float]) -> float | None:
    """The mean notional of the trades, in the quote asset."""
    return _mean(notionals) if notionals else None


def roi(points: Sequence[Point]) -> float | None:
    """Return on investment over the whole series: the gain (end value less start value
    less net flows after the start) over the capital put in (the start value plus the
    deposits, i.e. the positive flows). None when nothing was put in."""
    if len(points) < 2:
        return None
    flows = [p.net_flow for p in points[1:]]
    invested = points[0].value + sum(f for f in flows if f > 0)
    if invested <= 0:
        return None
    return (points[-1].value - points[0].value - sum(flows)) / invested


@dataclass(frozen=True, slots=True)
class Summary:
    returns: list[float]
    volatility: float | None
    sharpe_ratio: float | None
    max_drawdown: float
    value_at_risk_95: float | None
    roi: float | None


def summarize(
    points: Sequence[Point], *, periods_per_year: float, risk_free_rate: float = 0.0
) -> Summary:
    """Every series statistic at once (annualised volatility and Sharpe ratio)."""
    returns = period_returns(points)
    return Summary(
        returns=returns,
        volatility=volatility(returns, periods_per_year),
        sharpe_ratio=sharpe_ratio(
            returns, periods_per_year=periods_per_year, risk_free_rate=risk_free_rate
        ),
        max_drawdown=max_drawdown(returns),
        value_at_risk_95=value_at_risk(returns, 0.95),
        roi=roi(points),
    )
