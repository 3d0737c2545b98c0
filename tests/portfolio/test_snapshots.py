"""Portfolio snapshots, taken by the Celery tasks run for real with ``apply()``: the
value of every balance marked at its market's last price in USDC, the composition,
the period's deposits and withdrawals, P&L from the positions; one per account, kind
and period, so a rerun (or a retry after a lost connection) changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import DatabaseError, OperationalError, transaction
from django.utils import timezone

from dex import celery_app
from portfolio import metrics, tasks
from portfolio.models import PortfolioSnapshot, SnapshotKind
from portfolio.services import snapshots
from tests.factories import AccountFactory, AssetFactory
from tests.portfolio import sim

pytestmark = pytest.mark.django_db

D = Decimal


@pytest.fixture
def eager():
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture
def traded(market, buyer, seller):
    """The buyer (10,000 USDC) takes 2 ETH at 100 from the seller (50 ETH): the buyer
    pays 200 and the 0.1 taker fee, the seller receives 200 less its 0.04 maker fee."""
    ask = sim.place(seller, market, "SELL", "2", "100")
    bid = sim.place(buyer, market, "BUY", "2", "100")
    sim.fill_and_settle(ask, bid, "2")
    return market


def period() -> tuple[str, str]:
    """A period holding everything this test's transaction wrote."""
    now = timezone.now()
    return (now - timedelta(hours=1)).isoformat(), (now + timedelta(minutes=1)).isoformat()


def take(account, kind=SnapshotKind.INTERVAL, when=None):
    start, end = when or period()
    return tasks.snapshot_take.apply(args=(account.pk, kind, start, end))


def test_a_snapshot_values_every_balance_at_the_last_price_in_usdc(traded, buyer, seller):
    assert take(buyer).get() is True
    assert take(seller).get() is True

    mine = PortfolioSnapshot.objects.get(account=buyer)
    # 9,799.9 USDC + 2 ETH at 100.
    assert mine.total_value == D("9999.9")
    assert mine.quote.symbol == "USDC"
    assert mine.composition == [
        {"asset": "ETH", "quantity": "2.00000000", "mark": "100.00000000", "value": "200.00000000"},
        {
            "asset": "USDC",
            "quantity": "9799.90000000",
            "mark": "1.00000000",
            "value": "9799.90000000",
        },
    ]
    assert mine.net_flows == D(10000)  # the deposit
    # What the trades did, 9,999.9 - 10,000: the fee, realized.
    assert mine.realized_pnl + mine.unrealized_pnl == mine.total_value - mine.net_flows

    theirs = PortfolioSnapshot.objects.get(account=seller)
    # 48 ETH at 100 + 199.96 USDC; the 50 ETH deposit is worth 5,000 at the mark.
    assert theirs.total_value == D("4999.96")
    assert theirs.net_flows == D(5000)


def test_a_rerun_of_the_period_changes_nothing_even_after_the_market_moved(traded, buyer, seller):
    when = period()
    take(buyer, when=when).get()
    before = list(PortfolioSnapshot.objects.values_list())

    ask = sim.place(seller, traded, "SELL", "1", "150")
    bid = sim.place(buyer, traded, "BUY", "1", "150")
    sim.fill_and_settle(ask, bid, "1")
    assert take(buyer, when=when).get() is False

    assert list(PortfolioSnapshot.objects.values_list()) == before
    # Daily is a series of its own, and sees the new trade: 3 ETH at 150 and
    # 9,799.9 - 150 - 0.075 fee = 9,649.825 USDC.
    assert take(buyer, SnapshotKind.DAILY, when=when).get() is True
    assert PortfolioSnapshot.objects.get(account=buyer, kind="DAILY").total_value == D("10099.825")


def test_a_snapshot_whose_first_attempt_loses_its_connection_retries_and_writes_once(
    traded, buyer, monkeypatch
):
    real = snapshots.portfolio_valuation
    calls = []

    def flaky(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("the database system is shutting down")
        return real(**kwargs)

    monkeypatch.setattr(snapshots, "portfolio_valuation", flaky)
    assert take(buyer).get() is True
    assert len(calls) == 2
    assert PortfolioSnapshot.objects.filter(account=buyer).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_period_another_writes_meanwhile_writes_nothing_and_says_so(
    market, buyer, monkeypatch
):
    import threading

    from django.db import connection

    start, end = period()
    real = snapshots.portfolio_valuation

    def other_run() -> None:
        try:
            PortfolioSnapshot.objects.create(
                account=buyer,
                kind=SnapshotKind.INTERVAL,
                period_start=datetime.fromisoformat(start),
                period_end=datetime.fromisoformat(end),
                quote=market.quote,
                total_value=D(1),
                composition=[],
                net_flows=D(0),
                realized_pnl=D(0),
                unrealized_pnl=D(0),
            )
        finally:
            connection.close()

    def valuation(**kwargs):
        # The other run commits its row after this one found the period empty.
        thread = threading.Thread(target=other_run)
        thread.start()
        thread.join()
        return real(**kwargs)

    monkeypatch.setattr(snapshots, "portfolio_valuation", valuation)
    assert take(buyer, when=(start, end)).get() is False
    assert list(PortfolioSnapshot.objects.values_list("total_value", flat=True)) == [D(1)]


def test_assets_without_a_usdc_price_are_listed_but_not_counted(market, buyer):
    sim.deposit(buyer, AssetFactory(symbol="DOGE"), "1000")  # no market at all
    sim.deposit(buyer, market.base, "1")  # ETH-USDC has not traded yet

    take(buyer).get()

    snap = PortfolioSnapshot.objects.get(account=buyer)
    assert snap.total_value == D(10000)
    assert snap.composition == [
        {"asset": "DOGE", "quantity": "1000.00000000", "mark": None, "value": None},
        {"asset": "ETH", "quantity": "1.00000000", "mark": None, "value": None},
        {
            "asset": "USDC",
            "quantity": "10000.00000000",
            "mark": "1.00000000",
            "value": "10000.00000000",
        },
    ]
    assert snap.net_flows == D(10000)  # unpriced deposits are not counted either


def test_withdrawals_are_negative_flows(market, buyer):
    from portfolio.services.vault import withdrawal_request

    withdrawal_request(
        account=buyer,
        asset=market.quote,
        amount=D(2500),
        destination_address="0x" + "ab" * 20,
        idempotency_key="w-1",
    )
    take(buyer).get()
    snap = PortfolioSnapshot.objects.get(account=buyer)
    # Requested and held, not yet sent: still the trader's, no flow yet.
    assert (snap.total_value, snap.net_flows) == (D(10000), D(10000))


def test_an_asset_brought_in_and_sold_off_in_the_period_is_a_flow(market, buyer, seller):
    """The seller deposits 50 ETH and sells all of it: nothing of it is held at the
    snapshot, and the 5,000 it was worth came in as a deposit, not as a gain."""
    ask = sim.place(seller, market, "SELL", "50", "100")
    bid = sim.place(buyer, market, "BUY", "50", "100")
    sim.fill_and_settle(ask, bid, "50")
    take(seller).get()
    snap = PortfolioSnapshot.objects.get(account=seller)
    assert (snap.total_value, snap.net_flows) == (D(5000) - D(1), D(5000))  # 2 bps maker fee
    assert [line["asset"] for line in snap.composition] == ["USDC"]


def test_the_scheduled_task_snapshots_every_funded_account_once_per_period(
    traded, buyer, seller, eager, settings
):
    settings.PORTFOLIO_SNAPSHOT_INTERVAL = 3600
    AccountFactory()  # never funded: no snapshot

    assert tasks.snapshots_take.apply(kwargs={"kind": "INTERVAL"}).get() == 2
    before = list(PortfolioSnapshot.objects.values_list())
    assert tasks.snapshots_take.apply(kwargs={"kind": "INTERVAL"}).get() == 2

    assert list(PortfolioSnapshot.objects.values_list()) == before
    assert {s.account_id for s in PortfolioSnapshot.objects.all()} == {buyer.pk, seller.pk}
    snap = PortfolioSnapshot.objects.first()
    assert snap.period_end - snap.period_start == timedelta(hours=1)
    assert snap.period_end.timestamp() % 3600 == 0


@pytest.mark.parametrize(
    ("kind", "now", "start", "end"),
    [
        ("INTERVAL", datetime(2024, 3, 5, 10, 30, tzinfo=UTC), (3, 5, 9), (3, 5, 10)),
        ("INTERVAL", datetime(2024, 3, 5, 10, 0, tzinfo=UTC), (3, 5, 9), (3, 5, 10)),
        ("DAILY", datetime(2024, 3, 5, 0, 5, tzinfo=UTC), (3, 4, 0), (3, 5, 0)),
        ("DAILY", datetime(2024, 3, 1, 23, 59, tzinfo=UTC), (2, 29, 0), (3, 1, 0)),
    ],
)
def test_the_period_is_the_last_whole_one(kind, now, start, end):
    assert snapshots.snapshot_period(kind=kind, now=now, interval_seconds=3600) == (
        datetime(2024, *start, tzinfo=UTC),
        datetime(2024, *end, tzinfo=UTC),
    )


def test_snapshots_are_append_only(traded, buyer):
    take(buyer).get()
    with pytest.raises(DatabaseError), transaction.atomic():
        PortfolioSnapshot.objects.filter(account=buyer).update(total_value=1)
    with pytest.raises(DatabaseError), transaction.atomic():
        PortfolioSnapshot.objects.filter(account=buyer).delete()


def test_the_series_feeds_the_metrics(traded, buyer):
    hour = datetime(2024, 3, 5, 10, tzinfo=UTC)
    for i in range(3):
        start, end = hour + timedelta(hours=i), hour + timedelta(hours=i + 1)
        take(buyer, when=(start.isoformat(), end.isoformat())).get()
    points = snapshots.snapshot_points(account=buyer, kind="INTERVAL")
    # The flows are counted in the period the deposit fell in only (none of these).
    assert points == [metrics.Point(9999.9, 0.0)] * 3
    assert metrics.period_returns(points) == [0.0, 0.0]
