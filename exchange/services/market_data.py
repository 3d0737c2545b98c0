"""Market data kept for history: periodic order-book snapshots and OHLCV candles.

Both are derived (from the matcher's published book and from the trades) and written so
that doing it twice is the same as doing it once: a snapshot is stamped with the period
it stands for and a period holds one; a candle is recomputed from its trades and upserted,
rewritten only when a trade it had not seen has arrived.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from dex.db import insert_unless_taken
from exchange.models import (
    Candle,
    CandleInterval,
    CommandStatus,
    Market,
    OrderBookSnapshot,
    OrderCommand,
    Trade,
)
from exchange.selectors import (
    CANDLE_BUCKETS_CTE,
    CANDLE_INTERVALS,
    EPOCH,
    candle_floor,
    depth_get,
    ticker_24h,
)


def period_start(moment: datetime, seconds: int) -> datetime:
    """The start of the ``seconds``-long period (aligned on the Unix epoch) that holds
    ``moment``: the stamp of everything a periodic run takes in that period."""
    return candle_floor(moment, timedelta(seconds=seconds))


@transaction.atomic(durable=True)
def orderbook_snapshot_take(*, market: Market, taken_at: datetime, levels: int) -> bool:
    """Record ``market``'s book (top ``levels`` per side, from the matcher's published
    snapshot or, without one, the open orders) and its 24 h statistics, stamped
    ``taken_at``. Returns False, writing nothing, when the period already had one."""
    if OrderBookSnapshot.objects.filter(market=market, taken_at=taken_at).exists():
        return False
    depth = depth_get(market=market, limit=levels)
    sequence = depth.sequence
    if sequence is None:
        # Rebuilt from the database: the book reflects every command applied so far.
        sequence = (
            OrderCommand.objects.filter(market=market, status=CommandStatus.DONE).aggregate(
                last=Max("sequence")
            )["last"]
            or 0
        )
    ticker = ticker_24h(market=market, now=taken_at)
    best_bid = Decimal(depth.bids[0][0]) if depth.bids else None
    best_ask = Decimal(depth.asks[0][0]) if depth.asks else None
    snapshot = OrderBookSnapshot(
        market=market,
        sequence=sequence,
        best_bid=best_bid,
        best_ask=best_ask,
        spread=best_ask - best_bid if best_bid is not None and best_ask is not None else None,
        bids=[list(level) for level in depth.bids],
        asks=[list(level) for level in depth.asks],
        last_price=ticker.last_price,
        open_24h=ticker.open,
        high_24h=ticker.high,
        low_24h=ticker.low,
        volume_24h=ticker.volume,
        quote_volume_24h=ticker.quote_volume,
        trade_count_24h=ticker.trade_count,
        taken_at=taken_at,
    )
    # A concurrent run of the same period (a redelivered message) may have written it.
    return insert_unless_taken(snapshot, constraint="obsnapshot_unique_period")


# Buckets aligned on the epoch, open and close found by sequence through the unique
# (market, sequence) index; the upsert rewrites a stored bucket only when it differs,
# so a rerun over the same trades changes no row (not even its updated_at).
_CANDLES_UPSERT_SQL = (
    CANDLE_BUCKETS_CTE
    + """
INSERT INTO exchange_candle AS c
       (market_id, interval, open_time, close_time, open, high, low, close, volume,
        quote_volume, trade_count, first_sequence, last_sequence)
SELECT %(market)s, %(interval)s, b.open_time, b.open_time + %(step)s, o.price, b.high,
       b.low, l.price, b.volume, b.quote_volume, b.trade_count, b.first_sequence,
       b.last_sequence
  FROM buckets b
  JOIN exchange_trade o ON o.market_id = %(market)s AND o.sequence = b.first_sequence
  JOIN exchange_trade l ON l.market_id = %(market)s AND l.sequence = b.last_sequence
ON CONFLICT (market_id, interval, open_time) DO UPDATE
   SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
       close = EXCLUDED.close, volume = EXCLUDED.volume,
       quote_volume = EXCLUDED.quote_volume, trade_count = EXCLUDED.trade_count,
       first_sequence = EXCLUDED.first_sequence, last_sequence = EXCLUDED.last_sequence
 WHERE (c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trade_count,
        c.first_sequence, c.last_sequence)
       IS DISTINCT FROM
       (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
        EXCLUDED.quote_volume, EXCLUDED.trade_count, EXCLUDED.first_sequence,
        EXCLUDED.last_sequence)
"""
)


@transaction.atomic(durable=True)
def candles_roll(
    *,
    market: Market,
    interval: str,
    settle: timedelta,
    now: datetime | None = None,
) -> int:
    """Bring ``market``'s ``interval`` candles up to date with its trades, the bucket in
    progress included; returns how many candles were written (new or changed).

    It recomputes from the last stored bucket, or from ``settle`` ago if that is
    earlier: a trade is stamped when its batch's transaction began, so one can become
    visible a moment after a later trade did, and the buckets it lands in are looked at
    again until they are older than ``settle``.
    """
    CandleInterval(interval)  # refuses an interval there is no candle table for
    step = CANDLE_INTERVALS[interval]
    now = now or timezone.now()
    latest = Candle.objects.filter(market=market, interval=interval).aggregate(
        latest=Max("open_time")
    )["latest"]
    if latest is None:
        latest = Trade.objects.filter(market=market).aggregate(first=Min("executed_at"))["first"]
        if latest is None:
            return 0
    lo = candle_floor(min(latest, now - settle), step)
    hi = candle_floor(now, step) + step
    with connection.cursor() as cursor:
        cursor.execute(
            _CANDLES_UPSERT_SQL,
            {
                "step": step,
                "origin": EPOCH,
                "market": market.pk,
                "interval": interval,
                "lo": lo,
                "hi": hi,
            },
        )
        return cursor.rowcount
