"""Reads of money: balances, postings, fee rates, positions, trading statistics and
what a portfolio is worth."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from dex.db import ModelRows
from exchange.models import Account, Market, Trade
from portfolio import metrics
from portfolio.models import (
    Balance,
    FeeTier,
    LedgerAccount,
    LedgerAccountKind,
    PortfolioSnapshot,
    Position,
    Posting,
    SnapshotKind,
    TradingStats,
)
from portfolio.reports import realized_gains

ZERO = Decimal(0)
# Fee tiers look at the last 30 daily statistics rows (today's and the 29 days before).
FEE_VOLUME_DAYS = 30


def trader_available(*, asset_id: int, account_id: int) -> Decimal:
    """What ``account_id`` has available of ``asset_id``, as committed now (not locked:
    a check to repeat under the lock before money moves)."""
    balance = (
        LedgerAccount.objects.filter(
            kind=LedgerAccountKind.AVAILABLE,
            asset_id=asset_id,
            owner_id=account_id,
            market__isnull=True,
        )
        .values_list("balance", flat=True)
        .first()
    )
    return balance if balance is not None else ZERO


def balance_list(*, account: Account) -> QuerySet[Balance]:
    return Balance.objects.filter(account=account).select_related("asset").order_by("asset")


def posting_list(*, account: Account) -> QuerySet[Posting]:
    return (
        Posting.objects.filter(ledger_account__owner=account)
        .select_related("transaction", "ledger_account__asset")
        .order_by("-id")
    )


@dataclass(frozen=True, slots=True)
class FeeRates:
    maker: Decimal
    taker: Decimal
    tier: FeeTier | None = None


# Every order placement in a market whose quote has fee tiers reads it: one sum, written
# once (the windows of ``user_trading_statistics`` through the ORM cost ~0.6 ms a call).
_VOLUME_30D = (
    f"SELECT COALESCE(SUM(s.quote_volume), 0) FROM {TradingStats._meta.db_table} AS s"
    f" JOIN {Market._meta.db_table} AS m ON m.id = s.market_id"
    " WHERE s.account_id = %s AND m.quote_id = %s AND s.day BETWEEN %s AND %s"
)


def _utc_today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


def _fee_window(today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """The first and last UTC day fee tiers look at: the last 30, today included."""
    today = today or _utc_today()
    return today - dt.timedelta(days=FEE_VOLUME_DAYS - 1), today


def account_volume_30d(*, account: Account, quote_id: int, today: dt.date | None = None) -> Decimal:
    """Notional the trader traded in markets quoted in ``quote_id`` over the last 30
    UTC days, today included: the sum of the last 30 daily ``TradingStats`` rows (the
    window moves a day at a time, not by the second as a sum over raw trades did) —
    ``user_trading_statistics(...).d30.quote_volume``."""
    with connection.cursor() as cursor:
        cursor.execute(_VOLUME_30D, [account.pk, quote_id, *_fee_window(today)])
        return cursor.fetchone()[0]


_TIER = ModelRows(FeeTier, "t")
# Every order placement reads these: written once, not compiled per request. The
# trader's 30-day volume rides along (summed once, and only when the quote has tiers):
# one round trip, not two.
_TIERS_OF_QUOTE = (
    f"SELECT {_TIER.columns}, ({_VOLUME_30D}) FROM {FeeTier._meta.db_table} AS t"
    " WHERE t.quote_id = %s ORDER BY t.min_volume_30d DESC"
)


def fee_rates_for(*, account: Account, market: Market) -> FeeRates:
    """The maker and taker rates ``account`` pays in ``market``: the market's own, or
    its volume tier's where those are lower (a rebate never above the taker rate). The
    30-day volume is only summed when the quote asset has tiers at all."""
    with connection.cursor() as cursor:
        cursor.execute(
            _TIERS_OF_QUOTE, [account.pk, market.quote_id, *_fee_window(), market.quote_id]
        )
        rows = cursor.fetchall()
    if not rows:
        return FeeRates(market.maker_fee_rate, market.taker_fee_rate)
    volume = rows[0][-1]
    tiers = [_TIER.build(row, connection) for row in rows]
    tier = next((t for t in tiers if t.min_volume_30d <= volume), None)
    if tier is None:
        return FeeRates(market.maker_fee_rate, market.taker_fee_rate)
    taker = min(market.taker_fee_rate, tier.taker_fee_rate)
    # A rebate (a negative maker rate) within the taker fee, as every order's must be:
    # a market's generous rebate and a tier's low taker fee do not add up to more.
    maker = max(min(market.maker_fee_rate, tier.maker_fee_rate), -taker)
    return FeeRates(maker, taker, tier)


# --------------------------------------------------------------------------------------
# Positions and trading statistics
# --------------------------------------------------------------------------------------


def position_list(*, account: Account) -> QuerySet[Position]:
    return (
        Position.objects.filter(account=account)
        .select_related("asset", "quote")
        .order_by("asset", "quote")
    )


def trading_stats_list(*, account: Account) -> QuerySet[TradingStats]:
    return (
        TradingStats.objects.filter(account=account)
        .select_related("market")
        .order_by("-day", "market")
    )


@dataclass(frozen=True, slots=True)
class TradingWindow:
    """One window of a trader's trading in markets of one quote asset (amounts in it)."""

    days: int
    since: dt.date  # the first UTC day counted
    quote_volume: Decimal = ZERO
    buy_quote_volume: Decimal = ZERO
    sell_quote_volume: Decimal = ZERO
    maker_quote_volume: Decimal = ZERO
    taker_quote_volume: Decimal = ZERO
    trade_count: int = 0
    maker_count: int = 0
    taker_count: int = 0
    fees_paid: Decimal = ZERO
    realized_pnl: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class UserTradingStatistics:
    """A trader's 24 h, 7 d and 30 d windows, for fee tiers and limits. Built from the
    daily ``TradingStats`` rows: a window of N days is the last N UTC days, today
    included, so "24 h" is today so far and "30 d" the sum of the last 30 daily rows."""

    account_id: int
    quote_id: int
    h24: TradingWindow
    d7: TradingWindow
    d30: TradingWindow


_WINDOW_SUMS = (
    "quote_volume",
    "buy_quote_volume",
    "sell_quote_volume",
    "maker_quote_volume",
    "taker_quote_volume",
    "trade_count",
    "maker_count",
    "taker_count",
    "fees_paid",
    "realized_pnl",
)


def user_trading_statistics(
    *, account: Account, quote_id: int, today: dt.date | None = None
) -> UserTradingStatistics:
    """``account``'s trading windows in markets quoted in ``quote_id``: one query over at
    most 30 daily rows per market (index ``tradingstats_account_day_idx``)."""
    today = today or _utc_today()
    since = {days: today - dt.timedelta(days=days - 1) for days in (1, 7, FEE_VOLUME_DAYS)}
    rows = (
        TradingStats.objects.filter(
            account=account,
            market__quote_id=quote_id,
            day__gte=since[FEE_VOLUME_DAYS],
            day__lte=today,
        )
        .values("day")
        .annotate(**{column: Sum(column) for column in _WINDOW_SUMS})
    )
    totals: dict[int, dict] = {days: dict.fromkeys(_WINDOW_SUMS, 0) for days in since}
    for row in rows:
        for days, first in since.items():
            if row["day"] >= first:
                window = totals[days]
                for column in _WINDOW_SUMS:
                    window[column] += row[column]
    windows = {
        days: TradingWindow(
            days=days,
            since=since[days],
            **{c: (v if c.endswith("count") else Decimal(v)) for c, v in totals[days].items()},
        )
        for days in since
    }
    return UserTradingStatistics(
        account_id=account.pk,
        quote_id=quote_id,
        h24=windows[1],
        d7=windows[7],
        d30=windows[FEE_VOLUME_DAYS],
    )


# --------------------------------------------------------------------------------------
# Valuation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssetValuation:
    """One asset the trader holds or has a position in, marked in ``quote_id``.

    ``quantity`` is the trader's balance (available + held), deposits included;
    ``position_quantity`` and ``cost_basis`` are what trades built (see ``Position``).
    ``mark`` is the last trade price of the asset's market (1 for a quote asset, None
    when the market has not traded: ``value`` and ``unrealized_pnl`` are None then)."""

    asset_id: int
    symbol: str
    quote_id: int | None
    quantity: Decimal
    mark: Decimal | None
    value: Decimal | None
    position_quantity: Decimal = ZERO
    cost_basis: Decimal = ZERO
    average_entry_price: Decimal = ZERO
    unrealized_pnl: Decimal | None = ZERO
    realized_pnl: Decimal = ZERO
    fees_paid: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class QuoteTotals:
    """Totals over the assets marked in one quote asset (the quote's own balance
    included)."""

    value: Decimal = ZERO
    unrealized_pnl: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees_paid: Decimal = ZERO
    unmarked_assets: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PortfolioValuation:
    account_id: int
    assets: list[AssetValuation] = field(default_factory=list)
    totals: dict[int, QuoteTotals] = field(default_factory=dict)  # by quote asset id


def market_last_prices() -> dict[tuple[int, int], tuple[int, Decimal | None]]:
    """Each market's (market id, last trade price) by (base, quote): one query, an
    index lookup per market (``trade_unique_sequence``).

    Read through the view ``market_last_price`` (``compliance.0003``), not from the
    trades: under the trader API's row-level security the trades show only the
    caller's own, while the view runs as its owner and gives every market's last
    price, which is public, and nothing else of the trades."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT market_id, base_id, quote_id, last_price FROM market_last_price")
        return {(base, quote): (pk, price) for pk, base, quote, price in cursor.fetchall()}


def portfolio_valuation(*, account: Account) -> PortfolioValuation:
    """What ``account`` holds, marked at the last trade price of each asset's market,
    in that market's quote; a quote asset is worth 1 of itself. Unrealized P&L is
    ``position quantity × mark − cost basis`` (exact, see ``Position``).

    An asset that is the base of several markets is marked in the one with the lowest
    id; a position of it in another quote gets a line of its own, with no balance (the
    balance is valued once). An asset that is the base of no market and the quote of
    none is listed unmarked. Three queries, whatever the account holds."""
    prices = market_last_prices()
    quotes = {quote for _, quote in prices}
    home: dict[int, int] = {}  # base -> the quote it is marked in
    for (base, quote), (_, _price) in sorted(prices.items(), key=lambda kv: -kv[1][0]):
        home[base] = quote
    balances = {
        b.asset_id: b for b in Balance.objects.filter(account=account).select_related("asset")
    }
    positions = {(p.asset_id, p.quote_id): p for p in position_list(account=account)}

    keys = {(asset, home.get(asset, asset if asset in quotes else None)) for asset in balances}
    keys |= positions.keys()
    lines = []
    for asset_id, quote_id in sorted(keys, key=lambda k: (k[0], k[1] or 0)):
        position = positions.get((asset_id, quote_id))
        balance = balances.get(asset_id) if home.get(asset_id, quote_id) == quote_id else None
        if quote_id is None:
            mark = None
        elif quote_id == asset_id:
            mark = Decimal(1)
        else:
            mark = prices[(asset_id, quote_id)][1]
        quantity = balance.total if balance else ZERO
        line = AssetValuation(
            asset_id=asset_id,
            symbol=(balance or position).asset.symbol,
            quote_id=quote_id,
            quantity=quantity,
            mark=mark,
            value=None if mark is None else quantity * mark,
        )
        if position is not None:
            line = AssetValuation(
                asset_id=asset_id,
                symbol=line.symbol,
                quote_id=quote_id,
                quantity=quantity,
                mark=mark,
                value=line.value,
                position_quantity=position.quantity,
                cost_basis=position.cost_basis,
                average_entry_price=position.average_entry_price,
                unrealized_pnl=(
                    None if mark is None else position.quantity * mark - position.cost_basis
                ),
                realized_pnl=position.realized_pnl,
                fees_paid=position.fees_paid,
            )
        lines.append(line)

    totals: dict[int, QuoteTotals] = {}
    for line in lines:
        if line.quote_id is None:
            continue
        t = totals.get(line.quote_id, QuoteTotals())
        marked = line.value is not None
        totals[line.quote_id] = QuoteTotals(
            value=t.value + (line.value if marked else ZERO),
            unrealized_pnl=t.unrealized_pnl + (line.unrealized_pnl if marked else ZERO),
            realized_pnl=t.realized_pnl + line.realized_pnl,
            fees_paid=t.fees_paid + line.fees_paid,
            unmarked_assets=t.unmarked_assets + (() if marked else (line.asset_id,)),
        )
    return PortfolioValuation(account_id=account.pk, assets=lines, totals=totals)


# --------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------


def snapshot_value_series(
    *, account: Account, kind: str, limit: int
) -> list[tuple[dt.datetime, Decimal]]:
    """The last ``limit`` snapshots' ``(period_end, total_value)``, oldest first (the
    series' unique index serves it)."""
    rows = (
        PortfolioSnapshot.objects.filter(account=account, kind=kind)
        .order_by("-period_start")
        .values_list("period_end", "total_value")[:limit]
    )
    return list(reversed(rows))


@dataclass(frozen=True, slots=True)
class TradeOutcomes:
    """What the account's trades in a window came to: the realized gain of each sale
    whose cost is known (FIFO lots, fees included), and each trade's notional."""

    disposal_gains: list[Decimal]
    notionals: list[Decimal]


def trade_outcomes(*, account: Account, start: dt.datetime, end: dt.datetime) -> TradeOutcomes:
    """The trades of ``account`` executed in [``start``, ``end``)."""
    gains: dict[int, Decimal] = {}
    for year in range(start.astimezone(dt.UTC).year, end.astimezone(dt.UTC).year + 1):
        for row in realized_gains(account=account, year=year):
            if row.gain is not None and start <= row.disposed_at < end:
                gains[row.trade_id] = gains.get(row.trade_id, Decimal(0)) + row.gain
    notionals = list(
        Trade.objects.filter(Q(buyer=account) | Q(seller=account))
        .filter(executed_at__gte=start, executed_at__lt=end)
        .order_by("id")
        .values_list("quote_quantity", flat=True)
    )
    return TradeOutcomes(list(gains.values()), notionals)


def portfolio_metrics(*, account: Account, kind: str) -> dict:
    """Performance and risk of ``account``'s snapshot series of ``kind``
    (``portfolio.metrics``), and the win rate and average size of its trades in the
    series' window. A statistic the series is too short for is None."""
    series = list(
        PortfolioSnapshot.objects.filter(account=account, kind=kind)
        .select_related("quote")
        .order_by("period_start")
    )
    if kind == SnapshotKind.DAILY:
        periods_per_year = 365.0
    else:
        periods_per_year = 365 * 86400 / settings.PORTFOLIO_SNAPSHOT_INTERVAL
    summary = metrics.summarize(
        [metrics.Point(float(s.total_value), float(s.net_flows)) for s in series],
        periods_per_year=periods_per_year,
    )
    body = {
        "kind": kind,
        "quote": series[-1].quote.symbol if series else None,
        "snapshots": len(series),
        "returns": len(summary.returns),
        "first_period_start": series[0].period_start if series else None,
        "last_period_end": series[-1].period_end if series else None,
        "volatility": summary.volatility,
        "sharpe_ratio": summary.sharpe_ratio,
        "max_drawdown": summary.max_drawdown if summary.returns else None,
        "value_at_risk_95": summary.value_at_risk_95,
        "roi": summary.roi,
        "win_rate": None,
        "average_trade_size": None,
    }
    if series:
        outcomes = trade_outcomes(
            account=account, start=series[0].period_start, end=series[-1].period_end
        )
        body["win_rate"] = metrics.win_rate([float(g) for g in outcomes.disposal_gains])
        body["average_trade_size"] = metrics.average_trade_size(
            [float(n) for n in outcomes.notionals]
        )
    return body
