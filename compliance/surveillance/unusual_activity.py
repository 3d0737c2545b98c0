"""Unusual volume and unusual price moves, against the market's own history.

The window is compared with the ``ACTIVITY_LOOKBACK_WINDOWS`` windows of the same
length just before it, computed from the trades (the record; candles are derived from
them and only exist for fixed intervals). With fewer than
``ACTIVITY_MIN_HISTORY_WINDOWS`` of those windows having traded at all, the market has no
history to be unusual against and nothing is reported.

Unusual volume (``UNUSUAL_VOLUME``)
    The window's traded quantity exceeds the history's mean + ``VOLUME_STDEVS`` × its
    standard deviation, and is at least ``VOLUME_MIN_RATIO`` × the mean (so a market
    whose volume never varies is not flagged for a small rise). HIGH when it exceeds
    twice that threshold.

Unusual price move (``PRICE_MOVE``)
    The window's return — the log of its last trade price over the last price before
    it — exceeds ``PRICE_STDEVS`` × the standard deviation of the history's window
    returns (its volatility, a window without trades returning 0), and is at least
    ``PRICE_MIN_MOVE_BPS`` basis points. HIGH when it exceeds twice that threshold.

Both are about the market, not an account: the evidence lists the history window by
window and the window's largest trades (with their parties) to start the triage from.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

from django.db import connection

from compliance.models import AlertKind, AlertSeverity
from compliance.surveillance.config import SurveillanceConfig
from compliance.surveillance.findings import Finding, Window, dec, iso, trade_row
from exchange.models import Market, Trade

ZERO = Decimal(0)
BPS = Decimal(10_000)
LARGEST_TRADES = 20
FIGURE = Decimal("0.00000001")

# Per window of the history and the window itself (bucket 0, history -1, -2, …).
_BUCKETS_SQL = """
SELECT floor(extract(epoch FROM executed_at - %(start)s) / %(seconds)s)::int AS bucket,
       sum(quantity), sum(quote_quantity), count(*),
       (array_agg(price ORDER BY sequence DESC))[1] AS close
  FROM exchange_trade
 WHERE market_id = %(market)s AND executed_at >= %(since)s AND executed_at < %(until)s
 GROUP BY 1
"""


@dataclass(slots=True)
class Bucket:
    index: int
    window: Window
    quantity: Decimal = ZERO
    notional: Decimal = ZERO
    trades: int = 0
    close: Decimal | None = None
    ret: Decimal | None = None

    def row(self) -> dict:
        return {
            "window_start": iso(self.window.start),
            "quantity": dec(self.quantity),
            "notional": dec(self.notional),
            "trades": self.trades,
            "close": dec(self.close),
            "return_bps": dec((self.ret * BPS).quantize(Decimal("0.01")))
            if self.ret is not None
            else None,
        }


def _mean_stdev(values: list[Decimal]) -> tuple[Decimal, Decimal]:
    with localcontext() as ctx:
        ctx.prec = 34
        mean = sum(values, ZERO) / len(values)
        variance = sum(((v - mean) ** 2 for v in values), ZERO) / len(values)
        return mean, variance.sqrt()


def _buckets(market: Market, window: Window, lookback: int) -> list[Bucket]:
    buckets = [Bucket(index=i, window=window.shifted(i)) for i in range(-lookback, 1)]
    with connection.cursor() as cursor:
        cursor.execute(
            _BUCKETS_SQL,
            {
                "start": window.start,
                "seconds": window.seconds,
                "market": market.pk,
                "since": buckets[0].window.start,
                "until": window.end,
            },
        )
        for index, quantity, notional, trades, close in cursor.fetchall():
            bucket = buckets[index + lookback]
            bucket.quantity, bucket.notional, bucket.trades, bucket.close = (
                quantity,
                notional,
                trades,
                close,
            )
    previous = (
        Trade.objects.filter(market=market, executed_at__lt=buckets[0].window.start)
        .order_by("-executed_at", "-sequence")
        .values_list("price", flat=True)
        .first()
    )
    with localcontext() as ctx:
        ctx.prec = 34
        for bucket in buckets:
            if bucket.close is None:
                bucket.close = previous
            if previous is not None and bucket.close is not None:
                bucket.ret = (bucket.close / previous).ln()
            previous = bucket.close
    return buckets


@dataclass(frozen=True, slots=True)
class Activity:
    """A window next to its history, when the market has enough history to compare."""

    history: list[Bucket]
    current: Bucket
    traded_windows: int


def measure(*, market: Market, window: Window, config: SurveillanceConfig) -> Activity | None:
    """The window and its history; None when fewer than the minimum of history windows
    traded (nothing to be unusual against)."""
    buckets = _buckets(market, window, config.activity_lookback_windows)
    history, current = buckets[:-1], buckets[-1]
    traded = sum(1 for b in history if b.trades)
    if traded < config.activity_min_history_windows:
        return None
    return Activity(history=history, current=current, traded_windows=traded)


def detect(*, market: Market, window: Window, config: SurveillanceConfig) -> list[Finding]:
    activity = measure(market=market, window=window, config=config)
    if activity is None or not activity.current.trades:
        return []
    history, current = activity.history, activity.current
    findings = []
    evidence_base = {
        "history": [b.row() for b in history],
        "window": current.row(),
        "trades": _largest_trades(market, window),
    }

    mean, stdev = _mean_stdev([b.quantity for b in history])
    threshold = max(mean + config.volume_stdevs * stdev, config.volume_min_ratio * mean)
    if current.quantity > threshold:
        ratio = current.quantity / mean if mean else None
        findings.append(
            Finding(
                kind=AlertKind.UNUSUAL_VOLUME,
                severity=AlertSeverity.HIGH
                if current.quantity > 2 * threshold
                else AlertSeverity.MEDIUM,
                market=market,
                window=window,
                subject="market",
                summary=(
                    f"volume {dec(current.quantity)} in {current.trades} trades"
                    + (f", {ratio:.1f}× the mean" if ratio is not None else "")
                    + f" of the {len(history)} previous windows"
                    + f" (threshold {dec(threshold.quantize(FIGURE))})"
                )[:255],
                evidence={
                    "detector": "unusual_activity",
                    "thresholds": config.thresholds("activity_") | config.thresholds("volume_"),
                    "figures": {
                        "quantity": dec(current.quantity),
                        "trade_count": current.trades,
                        "history_mean": dec(mean.quantize(FIGURE)),
                        "history_stdev": dec(stdev.quantize(FIGURE)),
                        "threshold": dec(threshold.quantize(FIGURE)),
                        "history_windows_traded": activity.traded_windows,
                    },
                    **evidence_base,
                },
            )
        )

    returns = [b.ret for b in history if b.ret is not None]
    if current.ret is not None and len(returns) >= config.activity_min_history_windows:
        _, volatility = _mean_stdev(returns)
        floor = config.price_min_move_bps / BPS
        threshold = max(config.price_stdevs * volatility, floor)
        move = abs(current.ret)
        if move >= threshold and move > 0:
            bps = (current.ret * BPS).quantize(Decimal("0.1"))
            findings.append(
                Finding(
                    kind=AlertKind.PRICE_MOVE,
                    severity=AlertSeverity.HIGH if move > 2 * threshold else AlertSeverity.MEDIUM,
                    market=market,
                    window=window,
                    subject="market",
                    summary=(
                        f"price moved {dec(bps)} bps to {dec(current.close)} (volatility "
                        f"{_bps(volatility)} bps per window, threshold {_bps(threshold)} bps)"
                    )[:255],
                    evidence={
                        "detector": "unusual_activity",
                        "thresholds": config.thresholds("activity_") | config.thresholds("price_"),
                        "figures": {
                            "previous_close": dec(history[-1].close),
                            "close": dec(current.close),
                            "return_bps": dec(bps),
                            "volatility_bps": dec((volatility * BPS).quantize(Decimal("0.01"))),
                            "threshold_bps": dec((threshold * BPS).quantize(Decimal("0.01"))),
                            "history_returns": len(returns),
                        },
                        **evidence_base,
                    },
                )
            )
    return findings


def _bps(fraction: Decimal) -> str:
    return dec((fraction * BPS).quantize(Decimal("0.1")))


def _largest_trades(market: Market, window: Window) -> list[dict]:
    trades = Trade.objects.filter(
        market=market, executed_at__gte=window.start, executed_at__lt=window.end
    ).order_by("-quantity", "sequence")[:LARGEST_TRADES]
    return [trade_row(t) for t in trades]
