"""Positions and trading statistics, moved by the trades that settle.

``positions_apply`` runs inside ``trade_settle_many``, so in the transaction that
settles the trades — the matcher's batch — and exactly once per trade, as settlement
is. It costs a batch three statements however many trades it holds: one read of the
positions the trades touch (locked), one upsert of their final states, one upsert of
the per-day statistics.

The accounting (average cost, fees apart, realized P&L net of fees) is documented on
``portfolio.models.Position``; ``PositionState.trade`` is its one implementation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from django.db import connection

from exchange.models import Side, Trade
from portfolio.sql import sql_array

ZERO = Decimal(0)
QUANTUM = Decimal("0.00000001")  # the 8 places of amounts and prices
# Cost basis × quantity reaches ~45 significant digits before it is rounded back to 8
# places; the default context (28) would round it on the way.
PRECISION = 60


class PositionConflict(Exception):
    """A position row appeared between the batch's read and its write: another writer
    settled trades of the same pair concurrently. The transaction must be retried."""


@dataclass(slots=True)
class PositionState:
    """One position as the trades move it, in Python: see ``Position`` for the rules."""

    quantity: Decimal = ZERO
    cost_basis: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees_paid: Decimal = ZERO
    excess_sold: Decimal = ZERO
    trade_count: int = 0

    @property
    def average_entry_price(self) -> Decimal:
        if not self.quantity:
            return ZERO
        return (self.cost_basis / self.quantity).quantize(QUANTUM, ROUND_HALF_EVEN)

    def trade(
        self, *, side: str, quantity: Decimal, price: Decimal, notional: Decimal, fee: Decimal
    ) -> Decimal:
        """Apply one fill of ``quantity`` at ``price`` (``notional`` = price × quantity,
        as the trade records it) paying ``fee`` in quote; return the realized P&L it
        booked (net of its fee). Call inside ``localcontext(prec=PRECISION)``."""
        realized = -fee
        if side == Side.BUY:
            self.quantity += quantity
            self.cost_basis += notional
        else:
            covered = min(quantity, self.quantity)
            if covered:
                if covered == self.quantity:  # a full exit releases all of the basis
                    released = self.cost_basis
                else:
                    released = (self.cost_basis * covered / self.quantity).quantize(
                        QUANTUM, ROUND_HALF_EVEN
                    )
                proceeds = (
                    notional
                    if covered == quantity
                    else (price * covered).quantize(QUANTUM, ROUND_HALF_EVEN)
                )
                realized += proceeds - released
                self.quantity -= covered
                self.cost_basis -= released
            # Sold beyond the position: inventory that came by deposit, of unknown cost,
            # realized at no gain or loss.
            self.excess_sold += quantity - covered
        self.fees_paid += fee
        self.realized_pnl += realized
        self.trade_count += 1
        return realized


@dataclass(slots=True)
class _Stats:
    buy_volume: Decimal = ZERO
    sell_volume: Decimal = ZERO
    buy_quote_volume: Decimal = ZERO
    sell_quote_volume: Decimal = ZERO
    trade_count: int = 0
    maker_count: int = 0
    taker_count: int = 0
    maker_quote_volume: Decimal = ZERO
    taker_quote_volume: Decimal = ZERO
    fees_paid: Decimal = ZERO
    realized_pnl: Decimal = ZERO


PositionKey = tuple[int, int, int]  # account, asset, quote
StatsKey = tuple[int, int, dt.date]  # account, market, UTC day

_POSITIONS_READ = """
SELECT p.account_id, p.asset_id, p.quote_id, p.quantity, p.cost_basis, p.realized_pnl,
       p.fees_paid, p.excess_sold, p.trade_count
  FROM portfolio_position p
  JOIN unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS k(account_id, asset_id, quote_id)
 USING (account_id, asset_id, quote_id)
 ORDER BY p.id
   FOR UPDATE OF p
"""
_POSITION_COLUMNS = (
    "quantity",
    "average_entry_price",
    "cost_basis",
    "realized_pnl",
    "fees_paid",
    "excess_sold",
    "trade_count",
)
# Final states, not increments: the average cost depends on the order of the fills.
# updated_at written here spares the row its trigger (see updated_at_stamp).
_POSITIONS_UPSERT = f"""
INSERT INTO portfolio_position
       (account_id, asset_id, quote_id, {", ".join(_POSITION_COLUMNS)}, updated_at)
SELECT *, now()
  FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::numeric[], %s::numeric[],
              %s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[], %s::bigint[])
    ON CONFLICT (account_id, asset_id, quote_id) DO UPDATE
   SET {", ".join(f"{c} = EXCLUDED.{c}" for c in _POSITION_COLUMNS)}, updated_at = now()
RETURNING account_id, asset_id, quote_id, xmax = 0
"""
_STATS_COLUMNS = (
    "buy_volume",
    "sell_volume",
    "buy_quote_volume",
    "sell_quote_volume",
    "trade_count",
    "maker_count",
    "taker_count",
    "maker_quote_volume",
    "taker_quote_volume",
    "fees_paid",
    "realized_pnl",
)
_STATS_UPSERT = f"""
INSERT INTO portfolio_tradingstats
       (account_id, market_id, day, {", ".join(_STATS_COLUMNS)}, updated_at)
SELECT *, now()
  FROM unnest(%s::bigint[], %s::bigint[], %s::date[], %s::numeric[], %s::numeric[],
              %s::numeric[], %s::numeric[], %s::integer[], %s::integer[], %s::integer[],
              %s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[])
    ON CONFLICT (account_id, market_id, day) DO UPDATE
   SET {", ".join(f"{c} = portfolio_tradingstats.{c} + EXCLUDED.{c}" for c in _STATS_COLUMNS)},
       updated_at = now()
"""
# Both upserts in one statement (one round trip of the matcher's batch, not two): they
# write different tables, and only the positions' answer is read.
_POSITIONS_AND_STATS_UPSERT = (
    f"WITH p AS ({_POSITIONS_UPSERT}), s AS ({_STATS_UPSERT}) SELECT * FROM p"
)


def positions_apply(*, trades: Sequence[Trade]) -> None:
    """Move the buyer's and the seller's position and day statistics by each of
    ``trades``, in their order. Call inside the transaction that settles them, once per
    trade (``trade_settle_many`` does both), with ``market`` loaded on each trade.
    Raises ``PositionConflict`` if another transaction created one of the positions
    meanwhile (settlements of one market serialize on its fee account, so only a writer
    outside settlement could)."""
    if not trades:
        return
    keys: set[PositionKey] = set()
    for trade in trades:
        market = trade.market
        keys.add((trade.buyer_id, market.base_id, market.quote_id))
        keys.add((trade.seller_id, market.base_id, market.quote_id))
    ordered = sorted(keys)
    with connection.cursor() as cursor:
        columns = zip(*ordered, strict=True)
        cursor.execute(_POSITIONS_READ, [sql_array(column) for column in columns])
        positions = {
            (account, asset, quote): PositionState(*values)
            for account, asset, quote, *values in cursor.fetchall()
        }
        new = keys - positions.keys()
        for key in new:
            positions[key] = PositionState()
        stats = _positions_move(trades, positions)

        rows = [(*key, positions[key]) for key in ordered]
        days = sorted(stats)
        cursor.execute(
            _POSITIONS_AND_STATS_UPSERT,
            [
                sql_array(r[0] for r in rows),
                sql_array(r[1] for r in rows),
                sql_array(r[2] for r in rows),
                sql_array(r[3].quantity for r in rows),
                sql_array(r[3].average_entry_price for r in rows),
                sql_array(r[3].cost_basis for r in rows),
                sql_array(r[3].realized_pnl for r in rows),
                sql_array(r[3].fees_paid for r in rows),
                sql_array(r[3].excess_sold for r in rows),
                sql_array(r[3].trade_count for r in rows),
                sql_array(k[0] for k in days),
                sql_array(k[1] for k in days),
                sql_array(k[2] for k in days),
                *(sql_array(getattr(stats[k], c) for k in days) for c in _STATS_COLUMNS),
            ],
        )
        for account, asset, quote, inserted in cursor.fetchall():
            if not inserted and (account, asset, quote) in new:
                raise PositionConflict(
                    f"position of account {account} in asset {asset}/{quote} was created "
                    "by another transaction while this one settled trades"
                )


def _positions_move(
    trades: Sequence[Trade], positions: dict[PositionKey, PositionState]
) -> dict[StatsKey, _Stats]:
    """Apply ``trades`` in order to ``positions`` (in place); return the day statistics
    they add, per account, market and UTC day."""
    stats: dict[StatsKey, _Stats] = {}
    days: dict[dt.datetime, dt.date] = {}
    with localcontext(prec=PRECISION):
        for trade in trades:
            market = trade.market
            executed = trade.executed_at
            day = days.get(executed)
            if day is None:
                day = days[executed] = executed.astimezone(dt.UTC).date()
            buyer_is_taker = trade.aggressor_side == Side.BUY
            quantity, price, notional = trade.quantity, trade.price, trade.quote_quantity
            for side, account, is_taker, fee in (
                (
                    Side.BUY,
                    trade.buyer_id,
                    buyer_is_taker,
                    trade.taker_fee if buyer_is_taker else trade.maker_fee,
                ),
                (
                    Side.SELL,
                    trade.seller_id,
                    not buyer_is_taker,
                    trade.maker_fee if buyer_is_taker else trade.taker_fee,
                ),
            ):
                position = positions[(account, market.base_id, market.quote_id)]
                realized = position.trade(
                    side=side, quantity=quantity, price=price, notional=notional, fee=fee
                )
                key = (account, market.pk, day)
                row = stats.get(key)
                if row is None:
                    row = stats[key] = _Stats()
                if side == Side.BUY:
                    row.buy_volume += quantity
                    row.buy_quote_volume += notional
                else:
                    row.sell_volume += quantity
                    row.sell_quote_volume += notional
                row.trade_count += 1
                if is_taker:
                    row.taker_count += 1
                    row.taker_quote_volume += notional
                else:
                    row.maker_count += 1
                    row.maker_quote_volume += notional
                row.fees_paid += fee
                row.realized_pnl += realized
    return stats
