"""Trading statistics: per account, market and UTC day, added to by each settled trade
in its own transaction, and the 24 h / 7 d / 30 d windows read from those daily rows
(fee tiers among them)."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from exchange.matcher.market import MarketMatcher
from exchange.models import Trade
from portfolio.models import FeeTier, TradingStats
from portfolio.reconciliation import ledger_check
from portfolio.selectors import account_volume_30d, fee_rates_for, user_trading_statistics
from portfolio.services.positions import positions_apply
from tests.factories import AccountFactory, place_order

D = Decimal
pytestmark = pytest.mark.django_db


def test_a_batch_adds_volumes_the_maker_taker_split_and_fees(market, buyer, seller):
    matcher = MarketMatcher(market)
    place_order(seller, market, "SELL", "2", "100")
    place_order(buyer, market, "BUY", "1", "99")
    matcher.run_batch()
    place_order(buyer, market, "BUY", "1.5", "100")  # takes 1.5 of the ask
    place_order(seller, market, "SELL", "1", "99")  # takes the bid at 99
    matcher.run_batch()

    bought = TradingStats.objects.get(account=buyer)
    assert bought.day == Trade.objects.first().executed_at.astimezone(dt.UTC).date()
    assert (bought.buy_volume, bought.sell_volume, bought.volume) == (D("2.5"), 0, D("2.5"))
    assert (bought.buy_quote_volume, bought.quote_volume) == (D(249), D(249))
    assert (bought.trade_count, bought.taker_count, bought.maker_count) == (2, 1, 1)
    assert (bought.taker_quote_volume, bought.maker_quote_volume) == (D(150), D(99))
    assert bought.fees_paid == D("0.075") + D("0.0198")  # taker 5 bps, maker 2 bps
    assert bought.realized_pnl == -bought.fees_paid  # nothing sold yet

    sold = TradingStats.objects.get(account=seller)
    assert (sold.sell_volume, sold.sell_quote_volume) == (D("2.5"), D(249))
    assert (sold.maker_count, sold.taker_count) == (1, 1)
    assert ledger_check() == []


def test_ledger_check_finds_statistics_off_by_the_same_volume_on_both_sides(market, buyer, seller):
    matcher = MarketMatcher(market)
    place_order(seller, market, "SELL", "1", "100")
    matcher.run_batch()
    place_order(buyer, market, "BUY", "1", "100")
    matcher.run_batch()
    assert ledger_check() == []
    # A round trip booked as volume that never traded: the net is still right.
    TradingStats.objects.filter(account=buyer).update(
        buy_volume=F("buy_volume") + 1, sell_volume=F("sell_volume") + 1
    )

    subject = f"account {buyer.pk} market {market.pk}"
    assert [(p.rule, p.subject, p.expected, p.actual) for p in ledger_check()] == [
        ("trading statistics are not their trades (bought)", subject, D(1), D(2)),
        ("trading statistics are not their trades (sold)", subject, D(0), D(1)),
    ]


def test_trades_of_different_utc_days_land_on_their_own_rows(market, buyer, seller):
    late = dt.datetime(2026, 3, 1, 23, 59, 59, tzinfo=dt.UTC)
    # 00:30 in UTC+2 is still the 1st in UTC: days are UTC days.
    early = dt.datetime(2026, 3, 2, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    next_day = dt.datetime(2026, 3, 2, 0, 0, 1, tzinfo=dt.UTC)

    def trade(when, quantity):
        return Trade(
            market=market,
            buyer_id=buyer.pk,
            seller_id=seller.pk,
            aggressor_side="BUY",
            price=D(100),
            quantity=D(quantity),
            quote_quantity=D(100) * D(quantity),
            maker_fee=D(0),
            taker_fee=D(0),
            executed_at=when,
        )

    with transaction.atomic():
        positions_apply(trades=[trade(late, "1"), trade(early, "2"), trade(next_day, "4")])
    rows = dict(TradingStats.objects.filter(account=buyer).values_list("day", "buy_volume"))
    assert rows == {dt.date(2026, 3, 1): D(3), dt.date(2026, 3, 2): D(4)}


def _day(account, market, day, quote_volume, **fields):
    half = D(quote_volume) / 2
    return TradingStats.objects.create(
        account=account,
        market=market,
        day=day,
        buy_quote_volume=half,
        sell_quote_volume=half,
        trade_count=2,
        taker_count=2,
        taker_quote_volume=D(quote_volume),
        **fields,
    )


def test_windows_sum_the_last_n_daily_rows(market, trader):
    today = dt.date(2026, 5, 31)
    for days_ago, volume in [(0, 1), (1, 10), (6, 100), (7, 1_000), (29, 10_000), (30, 100_000)]:
        _day(trader, market, today - dt.timedelta(days=days_ago), volume, fees_paid=D("0.5"))
    _day(trader, market, today + dt.timedelta(days=1), 999)  # a future row is not counted

    stats = user_trading_statistics(account=trader, quote_id=market.quote_id, today=today)
    assert (stats.h24.quote_volume, stats.h24.since) == (D(1), today)
    assert stats.d7.quote_volume == D(111)
    assert stats.d7.since == today - dt.timedelta(days=6)
    assert stats.d30.quote_volume == D(11_111)
    assert (stats.d30.trade_count, stats.d30.taker_count, stats.d30.maker_count) == (10, 10, 0)
    assert stats.d30.fees_paid == D("2.5")
    # What fee tiers read: the same 30-day window, summed on its own.
    assert account_volume_30d(account=trader, quote_id=market.quote_id, today=today) == D(11_111)
    assert account_volume_30d(
        account=trader, quote_id=market.quote_id, today=today - dt.timedelta(days=1)
    ) == D(111_110)


def test_windows_are_per_quote_asset(market, trader):
    from tests.factories import AssetFactory, MarketFactory

    other = MarketFactory(base=AssetFactory(symbol="SOL"), quote=AssetFactory(symbol="DAI"))
    today = dt.datetime.now(dt.UTC).date()
    _day(trader, market, today, 5)
    _day(trader, other, today, 7)
    assert account_volume_30d(account=trader, quote_id=market.quote_id) == D(5)
    assert account_volume_30d(account=trader, quote_id=other.quote_id) == D(7)
    empty = user_trading_statistics(account=AccountFactory(), quote_id=market.quote_id)
    assert (empty.d30.quote_volume, empty.d30.trade_count) == (0, 0)


def test_fee_tiers_read_the_30_day_window_of_daily_rows(market, trader):
    FeeTier.objects.create(
        name="VIP 1",
        quote=market.quote,
        min_volume_30d=D(1_000),
        maker_fee_rate=D("0.0001"),
        taker_fee_rate=D("0.0003"),
    )
    today = dt.datetime.now(dt.UTC).date()
    _day(trader, market, today - dt.timedelta(days=30), 5_000)  # the 31st day back: out
    assert fee_rates_for(account=trader, market=market).tier is None
    _day(trader, market, today - dt.timedelta(days=29), 1_000)
    assert fee_rates_for(account=trader, market=market).tier.name == "VIP 1"


def test_one_row_per_account_market_and_day(market, trader):
    day = dt.date(2026, 1, 1)
    _day(trader, market, day, 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        _day(trader, market, day, 1)


@pytest.mark.parametrize(
    "assignment",
    ["buy_volume = -1", "sell_quote_volume = -1", "maker_count = 5"],
)
def test_stats_constraints(market, trader, assignment):
    row = _day(trader, market, dt.date(2026, 1, 1), 1)
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE portfolio_tradingstats SET {assignment} WHERE id = %s", [row.pk])
