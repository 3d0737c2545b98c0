"""Reads of public market data: markets and their rules, depth, recent trades, the 24 h
ticker and candles.

Statistics are computed by PostgreSQL in one statement each (aggregates over the
trades, with the first and last trade of a window found by ``sequence``), never by
looping over trades in Python. Depth is the matcher's published book when there is
one; without it (the matcher has not started yet, or Redis is unreachable) it is
rebuilt from the open orders, and the response says which it is.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Literal

import redis
from django.db import connection
from django.db.models import Case, F, Max, Min, QuerySet, Sum, When
from django.db.models.functions import Coalesce, Least
from django.utils import timezone

from dex.db import ModelRows
from dex.redis import redis_client
from exchange.matcher.publish import book_key
from exchange.models import (
    Asset,
    CandleInterval,
    Market,
    MarketStatus,
    Order,
    OrderStatus,
    Side,
    Trade,
)

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
# What the market_symbol_format constraint allows.
SYMBOL = re.compile(r"[A-Z][A-Z0-9]{1,11}-[A-Z][A-Z0-9]{1,11}")
TICKER_WINDOW = timedelta(hours=24)
CANDLE_INTERVALS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
# Orders that rest on the book and so make up its depth.
BOOK_STATUSES = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)
PERCENT = Decimal("0.01")

Level = tuple[str, str]  # (price, quantity) as decimal strings
PLACES = Decimal("0.00000001")
# Wide enough for any sum of NUMERIC(30, 8) amounts, so quantize never overflows.
_WIDE = Context(prec=80)


def decimal_text(value: Decimal | str | int) -> str:
    """A decimal with the platform's 8 places, as every column holds it: the same
    strings whether a level comes from the matcher's snapshot or the database."""
    return format(Decimal(value).quantize(PLACES, context=_WIDE), "f")


# --------------------------------------------------------------------------------------
# Markets and trades
# --------------------------------------------------------------------------------------


def market_list() -> QuerySet[Market]:
    return Market.objects.select_related("base", "quote").order_by("symbol")


_MARKET = ModelRows(Market, "m")
_BASE = ModelRows(Asset, "b")
_QUOTE = ModelRows(Asset, "q")
# Every order placement reads its market: written once, not compiled per request.
_MARKET_BY_SYMBOL = (
    f"SELECT {_MARKET.columns}, {_BASE.columns}, {_QUOTE.columns}"
    f" FROM {Market._meta.db_table} AS m"
    f" JOIN {Asset._meta.db_table} AS b ON b.id = m.base_id"
    f" JOIN {Asset._meta.db_table} AS q ON q.id = m.quote_id"
    " WHERE m.symbol = %s"
)


def market_get(*, symbol: str) -> Market | None:
    """The market called exactly ``symbol`` (``ETH-USDC``; case matters), with its base
    and quote assets, or None."""
    if not SYMBOL.fullmatch(symbol):
        return None  # cannot exist; and PostgreSQL refuses some strings (NUL) outright
    return _MARKET.fetch_one(
        connection, _MARKET_BY_SYMBOL, [symbol], related=(("base", _BASE), ("quote", _QUOTE))
    )


_ORDER = ModelRows(Order, "o")
_ORDER_MARKET = Order._meta.get_field("market")
# Every placement asks for the first and, answered by the matcher in time, reads the
# second: written once, not compiled per request.
_ORDER_BY_CLIENT_ID = (
    f"SELECT {_ORDER.columns} FROM {Order._meta.db_table} AS o"
    " WHERE o.account_id = %s AND o.client_order_id = %s"
)
_ORDER_BY_ID = f"SELECT {_ORDER.columns} FROM {Order._meta.db_table} AS o WHERE o.id = %s"


def order_by_client_id(*, account_id: int, client_order_id: str) -> Order | None:
    """The account's order with ``client_order_id`` (unique per account), or None."""
    return _ORDER.fetch_one(connection, _ORDER_BY_CLIENT_ID, [account_id, client_order_id])


def order_reload(order: Order) -> Order:
    """``order`` as the database holds it now, its market as it was read for the
    request; ``order`` itself if it has moved to the archive (only a long-finished one
    has)."""
    fresh = _ORDER.fetch_one(connection, _ORDER_BY_ID, [order.pk])
    if fresh is None:
        return order
    _ORDER_MARKET.set_cached_value(fresh, order.market)
    return fresh


def trade_list_recent(*, market: Market, limit: int) -> QuerySet[Trade]:
    """The market's latest ``limit`` trades, newest first (by trade sequence, which is
    the order the matcher executed them in)."""
    return Trade.objects.filter(market=market).order_by("-sequence")[:limit]


# --------------------------------------------------------------------------------------
# Depth
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Depth:
    symbol: str
    source: Literal["matcher", "database"]
    # The matcher's journal position the book reflects; None when rebuilt from the
    # database, which has no such position to offer.
    sequence: int | None
    bids: list[Level]
    asks: list[Level]


def _snapshots(symbols: Sequence[str]) -> dict[str, dict]:
    """The matcher's latest published books, by symbol; a market without one (or all of
    them, when Redis cannot answer) is missing from the result."""
    if not symbols:
        return {}
    try:
        raw = redis_client().mget([book_key(symbol) for symbol in symbols])
    except redis.RedisError:
        log.warning("redis unavailable: market data falls back to the database", exc_info=True)
        return {}
    books = {}
    for symbol, value in zip(symbols, raw, strict=True):
        if value is None:
            continue
        try:
            book = json.loads(value)
            books[symbol] = {
                "sequence": int(book["sequence"]),
                "bids": [(decimal_text(p), decimal_text(q)) for p, q in book["bids"]],
                "asks": [(decimal_text(p), decimal_text(q)) for p, q in book["asks"]],
            }
        except (ValueError, KeyError, TypeError, ArithmeticError):
            log.error("book snapshot of %s is malformed; ignoring it", symbol)
    return books


def _visible_quantity():
    # An iceberg shows at most its display slice; this is what a book rebuilt from the
    # database shows too.
    return Least(F("remaining"), Coalesce(F("display_quantity"), F("remaining")))


def _book_orders(markets: Iterable[Market]) -> QuerySet[Order]:
    return Order.objects.filter(
        market__in=markets, status__in=BOOK_STATUSES, price__isnull=False, remaining__gt=0
    )


def _database_levels(market: Market, side: str, limit: int) -> list[Level]:
    rows = (
        _book_orders([market])
        .filter(side=side)
        .values("price")
        .annotate(quantity=Sum(_visible_quantity()))
        .order_by("-price" if side == Side.BUY else "price")[:limit]
    )
    return [(decimal_text(row["price"]), decimal_text(row["quantity"])) for row in rows]


def depth_get(*, market: Market, limit: int) -> Depth:
    """The top ``limit`` price levels of each side, best first."""
    book = _snapshots([market.symbol]).get(market.symbol)
    if book is not None:
        return Depth(
            symbol=market.symbol,
            source="matcher",
            sequence=book["sequence"],
            bids=book["bids"][:limit],
            asks=book["asks"][:limit],
        )
    return Depth(
        symbol=market.symbol,
        source="database",
        sequence=None,
        bids=_database_levels(market, Side.BUY, limit),
        asks=_database_levels(market, Side.SELL, limit),
    )


def _best_prices(markets: Sequence[Market]) -> dict[int, tuple[str | None, str | None]]:
    """Best bid and ask per market id: from the matcher's books, and for markets without
    one from the open orders (one query for all of them)."""
    books = _snapshots([m.symbol for m in markets])
    best: dict[int, tuple[str | None, str | None]] = {}
    missing = []
    for market in markets:
        book = books.get(market.symbol)
        if book is None:
            missing.append(market)
            continue
        best[market.pk] = (
            book["bids"][0][0] if book["bids"] else None,
            book["asks"][0][0] if book["asks"] else None,
        )
    if missing:
        rows = (
            _book_orders(missing)
            .values("market_id")
            .annotate(
                bid=Max(Case(When(side=Side.BUY, then=F("price")))),
                ask=Min(Case(When(side=Side.SELL, then=F("price")))),
            )
            .order_by()
        )
        found = {row["market_id"]: row for row in rows}
        for market in missing:
            row = found.get(market.pk, {})
            best[market.pk] = tuple(
                None if row.get(side) is None else decimal_text(row[side])
                for side in ("bid", "ask")
            )
    return best


# --------------------------------------------------------------------------------------
# 24 h ticker
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    open_time: datetime
    close_time: datetime
    # The latest trade, whenever it was; the rest is over the window
    # (open_time, close_time], and None (counts zero) when the window has no trades.
    last_price: Decimal | None
    last_trade_at: datetime | None
    open: Decimal | None
    high: Decimal | None
    low: Decimal | None
    change: Decimal | None
    change_percent: Decimal | None
    volume: Decimal
    quote_volume: Decimal
    trade_count: int
    best_bid: str | None
    best_ask: str | None


_TICKER_SQL = """
WITH markets AS (
    SELECT unnest(%(ids)s::bigint[]) AS market_id
), day AS (
    SELECT market_id,
           min(sequence) AS first_sequence,
           max(price) AS high,
           min(price) AS low,
           sum(quantity) AS volume,
           sum(quote_quantity) AS quote_volume,
           count(*) AS trade_count
      FROM exchange_trade
     WHERE market_id = ANY(%(ids)s::bigint[])
       AND executed_at > %(since)s AND executed_at <= %(until)s
     GROUP BY market_id
)
SELECT m.market_id,
       first.price,
       day.high,
       day.low,
       coalesce(day.volume, 0.00000000),
       coalesce(day.quote_volume, 0.00000000),
       coalesce(day.trade_count, 0),
       last.price,
       last.executed_at
  FROM markets m
  LEFT JOIN day ON day.market_id = m.market_id
  LEFT JOIN exchange_trade first
         ON first.market_id = m.market_id AND first.sequence = day.first_sequence
  LEFT JOIN LATERAL (
        SELECT t.price, t.executed_at
          FROM exchange_trade t
         WHERE t.market_id = m.market_id AND t.executed_at <= %(until)s
         ORDER BY t.sequence DESC
         LIMIT 1
       ) last ON true
"""


def ticker_list(*, markets: Sequence[Market], now: datetime | None = None) -> list[Ticker]:
    """The 24 h statistics of each of ``markets``, in the order given: one SQL statement
    for the trades of all of them, one Redis read for their books."""
    markets = list(markets)
    if not markets:
        return []
    until = now or timezone.now()
    since = until - TICKER_WINDOW
    with connection.cursor() as cursor:
        cursor.execute(
            _TICKER_SQL, {"ids": [m.pk for m in markets], "since": since, "until": until}
        )
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
    best = _best_prices(markets)
    tickers = []
    for market in markets:
        open_, high, low, volume, quote_volume, count, last, last_at = rows[market.pk]
        change = change_percent = None
        if open_ is not None and last is not None:
            change = last - open_
            change_percent = (change * 100 / open_).quantize(PERCENT, ROUND_HALF_EVEN)
        tickers.append(
            Ticker(
                symbol=market.symbol,
                open_time=since,
                close_time=until,
                last_price=last,
                last_trade_at=last_at,
                open=open_,
                high=high,
                low=low,
                change=change,
                change_percent=change_percent,
                volume=volume,
                quote_volume=quote_volume,
                trade_count=count,
                best_bid=best[market.pk][0],
                best_ask=best[market.pk][1],
            )
        )
    return tickers


def ticker_24h(*, market: Market, now: datetime | None = None) -> Ticker:
    return ticker_list(markets=[market], now=now)[0]


# --------------------------------------------------------------------------------------
# Candles
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candle:
    open_time: datetime
    close_time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trade_count: int


# Buckets are aligned on the Unix epoch (so days start at 00:00 UTC). A bucket's open
# and close are its first and last trade by sequence, found through the unique
# (market, sequence) index rather than by sorting the bucket's trades. The Celery
# roll-up into ``Candle`` (``exchange.services.market_data``) uses the same buckets.
CANDLE_BUCKETS_CTE = """
WITH buckets AS (
    SELECT date_bin(%(step)s, executed_at, %(origin)s) AS open_time,
           min(sequence) AS first_sequence,
           max(sequence) AS last_sequence,
           max(price) AS high,
           min(price) AS low,
           sum(quantity) AS volume,
           sum(quote_quantity) AS quote_volume,
           count(*) AS trade_count
      FROM exchange_trade
     WHERE market_id = %(market)s AND executed_at >= %(lo)s AND executed_at < %(hi)s
     GROUP BY 1
)
"""
_CANDLES_SQL = (
    CANDLE_BUCKETS_CTE
    + """
SELECT b.open_time, o.price, b.high, b.low, c.price, b.volume, b.quote_volume, b.trade_count
  FROM buckets b
  JOIN exchange_trade o ON o.market_id = %(market)s AND o.sequence = b.first_sequence
  JOIN exchange_trade c ON c.market_id = %(market)s AND c.sequence = b.last_sequence
 ORDER BY b.open_time
 LIMIT %(limit)s
"""
)


def _moved(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, held within the years 1 to 9999 that Python can represent
    (no trade is that old or that new, so the clamp never loses one)."""
    try:
        return moment + delta
    except OverflowError:
        return EARLIEST if delta < timedelta(0) else LATEST


def candle_floor(moment: datetime, step: timedelta) -> datetime:
    """The open time of the ``step`` bucket that holds ``moment``."""
    return _moved(EPOCH, ((moment - EPOCH) // step) * step)


def candle_list(
    *,
    market: Market,
    interval: str,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 500,
) -> list[Candle]:
    """OHLCV candles of ``interval`` (``1m``, ``5m``, ``1h``, ``1d``), oldest first;
    buckets without trades are left out.

    The buckets asked for are those from the one holding ``start`` to the one holding
    ``end`` (default now), at most ``limit`` of them: the first ``limit`` from
    ``start`` when it is given, otherwise the last ``limit`` up to ``end``. Every
    bucket returned is whole (all its trades, even past ``end``).
    """
    step = CANDLE_INTERVALS[interval]
    last = candle_floor(end or timezone.now(), step)
    if start is None:
        lo = _moved(last, -(limit - 1) * step)
        hi = _moved(last, step)
    else:
        lo = candle_floor(start, step)
        hi = _moved(lo, limit * step)
        if end is not None:
            hi = min(hi, _moved(last, step))
    with connection.cursor() as cursor:
        cursor.execute(
            _CANDLES_SQL,
            {
                "step": step,
                "origin": EPOCH,
                "market": market.pk,
                "lo": lo,
                "hi": hi,
                "limit": limit,
            },
        )
        return [
            Candle(
                open_time=open_time,
                close_time=open_time + step,
                open=open_,
                high=high,
                low=low,
                close=close,
                volume=volume,
                quote_volume=quote_volume,
                trade_count=count,
            )
            for open_time, open_, high, low, close, volume, quote_volume, count in (
                cursor.fetchall()
            )
        ]


def database_levels(market: Market, side: str, limit: int) -> list[Level]:
    """The top ``limit`` levels of one side of the book the open orders make, best
    first (for a reader that needs them inside its own transaction)."""
    return _database_levels(market, side, limit)


# Closed markets whose last trade is not in the candle of every interval yet: one trade
# and one candle per interval, each read backwards on its unique index.
_UNROLLED_CLOSED_MARKETS_SQL = """
SELECT m.id
  FROM exchange_market m
 CROSS JOIN LATERAL (
       SELECT t.sequence, t.executed_at
         FROM exchange_trade t
        WHERE t.market_id = m.id
        ORDER BY t.sequence DESC
        LIMIT 1
       ) newest
 WHERE m.status = %(closed)s
   AND EXISTS (
       SELECT 1
         FROM unnest(%(intervals)s::text[]) AS i(interval)
        WHERE COALESCE(
                  (SELECT c.last_sequence
                     FROM exchange_candle c
                    WHERE c.market_id = m.id
                      AND c.interval = i.interval
                      AND c.open_time <= newest.executed_at
                    ORDER BY c.open_time DESC
                    LIMIT 1),
                  0
              ) < newest.sequence
       )
 ORDER BY m.id
"""


def closed_market_ids_unrolled() -> list[int]:
    """Closed markets whose candles lack trades: those made between a market's last roll
    and its closing. Once every interval's candles hold its last trade, a closed market
    costs a few index reads per run and is left alone."""
    with connection.cursor() as cursor:
        cursor.execute(
            _UNROLLED_CLOSED_MARKETS_SQL,
            {"closed": MarketStatus.CLOSED, "intervals": list(CandleInterval.values)},
        )
        return [market_id for (market_id,) in cursor.fetchall()]
