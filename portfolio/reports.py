"""Tax-style realized gains: each disposal matched against the earliest acquisitions
still held (FIFO lots), per account and calendar year (UTC), from the account's trades.

- A buy opens a lot: its quantity, and as cost the notional plus the fee the account
  paid on it (a maker rebate lowers it); acquired when the trade executed.
- A sell disposes of the oldest lots first; its proceeds are the notional less the fee
  the account paid. A sell that takes part of a lot takes that share of the lot's
  cost, and a sell spread over several lots shares its proceeds by quantity; the last
  share gets what rounding to 8 places left over, so a disposal's rows add up to its
  proceeds exactly and a lot's cost is used up exactly.
- Lots are kept per base asset *and* quote asset: costs and proceeds are in the
  market's quote asset (the row's ``currency``), never converted.
- Quantity sold beyond every lot bought on the venue (coins that were deposited) has
  no known cost: its row has no cost basis, gain or acquisition date.

Every trade of the account up to the end of the year is replayed, so lots bought in
earlier years and partly sold since are where FIFO says they are.
"""

from __future__ import annotations

import csv
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from io import StringIO
from typing import TextIO

from django.db.models import Q

from exchange.models import Account, Side, Trade

PLACES = Decimal("0.00000001")
CSV_HEADER = [
    "disposal_date",
    "asset",
    "quantity",
    "proceeds",
    "cost_basis",
    "gain",
    "acquisition_date",
    "currency",
    "trade_id",
]


@dataclass(frozen=True, slots=True)
class GainRow:
    disposed_at: datetime
    asset: str
    quantity: Decimal
    proceeds: Decimal
    cost_basis: Decimal | None
    gain: Decimal | None
    acquired_at: datetime | None
    currency: str
    trade_id: int


@dataclass(slots=True)
class _Lot:
    quantity: Decimal
    cost: Decimal
    acquired_at: datetime


def _share(amount: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    return (amount * part / whole).quantize(PLACES, ROUND_HALF_EVEN)


def _fee_paid(trade: Trade, side: str) -> Decimal:
    """The fee the ``side`` of ``trade`` paid (negative for a maker rebate)."""
    return trade.taker_fee if trade.aggressor_side == side else trade.maker_fee


def _dispose(lots: deque[_Lot], trade: Trade, currency: str) -> list[GainRow]:
    quantity = trade.quantity
    proceeds_left = trade.quote_quantity - _fee_paid(trade, Side.SELL)
    rows = []
    left = quantity
    while left > 0:
        lot = lots[0] if lots else None
        take = min(left, lot.quantity) if lot else left
        last = take == left
        proceeds = proceeds_left if last else _share(proceeds_left, take, left)
        proceeds_left -= proceeds
        cost = acquired_at = gain = None
        if lot is not None:
            cost = lot.cost if take == lot.quantity else _share(lot.cost, take, lot.quantity)
            lot.quantity -= take
            lot.cost -= cost
            acquired_at = lot.acquired_at
            gain = proceeds - cost
            if lot.quantity == 0:
                lots.popleft()
        rows.append(
            GainRow(
                disposed_at=trade.executed_at,
                asset=trade.market.base.symbol,
                quantity=take,
                proceeds=proceeds,
                cost_basis=cost,
                gain=gain,
                acquired_at=acquired_at,
                currency=currency,
                trade_id=trade.pk,
            )
        )
        left -= take
    return rows


def realized_gains(*, account: Account, year: int) -> list[GainRow]:
    """The account's disposals in ``year`` (UTC), one row per lot each one used, in
    the order they happened."""
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    trades = (
        Trade.objects.filter(Q(buyer=account) | Q(seller=account), executed_at__lt=end)
        .select_related("market__base", "market__quote")
        .order_by("executed_at", "market_id", "sequence")
    )
    lots: dict[tuple[int, int], deque[_Lot]] = defaultdict(deque)
    rows: list[GainRow] = []
    for trade in trades.iterator(chunk_size=2000):
        key = (trade.market.base_id, trade.market.quote_id)
        if trade.buyer_id == account.pk:
            cost = trade.quote_quantity + _fee_paid(trade, Side.BUY)
            lots[key].append(_Lot(trade.quantity, cost, trade.executed_at))
        else:
            disposed = _dispose(lots[key], trade, trade.market.quote.symbol)
            if trade.executed_at >= start:
                rows.extend(disposed)
    return rows


def _text(value: Decimal | None) -> str:
    return "" if value is None else format(value.quantize(PLACES), "f")


def gains_csv_write(rows: Iterable[GainRow], out: TextIO) -> None:
    """Write ``rows`` as CSV (dates as UTC ``YYYY-MM-DD``; an unknown cost basis, gain
    or acquisition date is an empty field)."""
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for row in rows:
        writer.writerow(
            [
                row.disposed_at.astimezone(UTC).date().isoformat(),
                row.asset,
                _text(row.quantity),
                _text(row.proceeds),
                _text(row.cost_basis),
                _text(row.gain),
                row.acquired_at.astimezone(UTC).date().isoformat() if row.acquired_at else "",
                row.currency,
                row.trade_id,
            ]
        )


def gains_report_csv(*, account: Account, year: int) -> str:
    """The account's realized gains report for ``year`` as CSV text."""
    out = StringIO()
    gains_csv_write(realized_gains(account=account, year=year), out)
    return out.getvalue()
