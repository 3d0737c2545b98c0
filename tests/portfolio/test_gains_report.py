"""The realized gains report: FIFO lots across several buys, sells that take part of a
lot and sells spread over several, fees in cost and proceeds, the year's window, and
the CSV the management command writes."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from exchange.models import Side
from portfolio.reports import CSV_HEADER, gains_report_csv, realized_gains
from tests.factories import AccountFactory, AssetFactory, MarketFactory
from tests.trades import trade_at

pytestmark = pytest.mark.django_db

D = Decimal


def at(month: int, day: int = 1, year: int = 2024) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


@pytest.fixture
def eth_usdc(db):
    return MarketFactory(base=AssetFactory(symbol="ETH"), quote=AssetFactory(symbol="USDC"))


@pytest.fixture
def me(db):
    return AccountFactory()


def buy(market, account, quantity, price, when, fee="0", *, maker=False):
    """``account`` buys, as taker paying ``fee`` (or as maker paying it)."""
    if maker:
        return trade_at(
            market, price, quantity, when, buyer=account, taker_side=Side.SELL,
            maker_fee=fee, taker_fee=max(D(0), -D(fee)),
        )  # fmt: skip
    return trade_at(market, price, quantity, when, buyer=account, taker_fee=fee)


def sell(market, account, quantity, price, when, fee="0", *, maker=False):
    if maker:
        return trade_at(
            market, price, quantity, when, seller=account, taker_side=Side.BUY,
            maker_fee=fee, taker_fee=max(D(0), -D(fee)),
        )  # fmt: skip
    return trade_at(market, price, quantity, when, seller=account, taker_side=Side.SELL,
                    taker_fee=fee)  # fmt: skip


def table(rows) -> list[tuple]:
    return [
        (
            r.disposed_at,
            r.asset,
            r.quantity,
            r.proceeds,
            r.cost_basis,
            r.gain,
            r.acquired_at,
        )
        for r in rows
    ]


def test_fifo_takes_lots_in_order_splitting_lots_and_disposals(eth_usdc, me):
    buy(eth_usdc, me, "2", "100", at(1, 10), fee="0.1")  # lot 1: cost 200.1
    buy(eth_usdc, me, "3", "110", at(2), fee="0.33")  # lot 2: cost 330.33
    buy(eth_usdc, me, "1", "120", at(3))  # lot 3: cost 120
    # 4 at 130 less 0.52 fee: proceeds 519.48, 259.74 per 2. Lot 1 whole (200.1), then
    # 2 of lot 2's 3: 330.33 * 2 / 3 = 220.22.
    sell(eth_usdc, me, "4", "130", at(4), fee="0.52")
    # 1.5 at 90 less 0.135: proceeds 134.865; 1 of it is 134.865 / 1.5 = 89.91, the other
    # 0.5 gets 44.955. Lot 2's last 1 costs what is left of it, 330.33 - 220.22 = 110.11;
    # half of lot 3 costs 60.
    sell(eth_usdc, me, "1.5", "90", at(5), fee="0.135")

    assert table(realized_gains(account=me, year=2024)) == [
        (at(4), "ETH", D(2), D("259.74"), D("200.1"), D("59.64"), at(1, 10)),
        (at(4), "ETH", D(2), D("259.74"), D("220.22"), D("39.52"), at(2)),
        (at(5), "ETH", D(1), D("89.91"), D("110.11"), D("-20.2"), at(2)),
        (at(5), "ETH", D("0.5"), D("44.955"), D(60), D("-15.045"), at(3)),
    ]


@pytest.mark.parametrize(
    ("trades", "expected"),
    [
        pytest.param(
            # Thirds of a lot costing 3 * 33.33 + 0.01 fee = 100: the first takes
            # 100 / 3 = 33.33333333; the 66.66666667 left halves to 33.333333335, which
            # rounds half to even to 33.33333334; the last takes the 33.33333333 left,
            # so the lot's cost is used up exactly.
            [("buy", "3", "33.33", 1, "0.01"), *[("sell", "1", "50", m, "0") for m in (2, 3, 4)]],
            [
                (D(1), D(50), D("33.33333333"), D("16.66666667")),
                (D(1), D(50), D("33.33333334"), D("16.66666666")),
                (D(1), D(50), D("33.33333333"), D("16.66666667")),
            ],
            id="a-lot-sold-in-thirds",
        ),
        pytest.param(
            # One sale over three lots: proceeds 3 * 10 shared 1 : 1 : 1.
            [
                ("buy", "1", "5", 1, "0"),
                ("buy", "1", "6", 2, "0"),
                ("buy", "1", "7", 3, "0"),
                ("sell", "3", "10", 4, "0"),
            ],
            [
                (D(1), D(10), D(5), D(5)),
                (D(1), D(10), D(6), D(4)),
                (D(1), D(10), D(7), D(3)),
            ],
            id="one-sale-over-three-lots",
        ),
        pytest.param(
            # A maker rebate (negative fee) lowers the cost and raises the proceeds.
            [("buy-maker", "1", "100", 1, "-0.02"), ("sell-maker", "1", "110", 2, "-0.022")],
            [(D(1), D("110.022"), D("99.98"), D("10.042"))],
            id="maker-rebates",
        ),
        pytest.param(
            # Selling coins never bought here (deposited): no known cost.
            [("buy", "1", "100", 1, "0"), ("sell", "1.5", "120", 2, "0")],
            [(D(1), D(120), D(100), D(20)), (D("0.5"), D(60), None, None)],
            id="more-sold-than-bought",
        ),
        pytest.param(
            # Fully out, then back in: the new lot's cost is its own.
            [
                ("buy", "1", "100", 1, "0"),
                ("sell", "1", "90", 2, "0"),
                ("buy", "1", "80", 3, "0"),
                ("sell", "1", "85", 4, "0"),
            ],
            [(D(1), D(90), D(100), D(-10)), (D(1), D(85), D(80), D(5))],
            id="exit-and-re-entry",
        ),
    ],
)
def test_lot_tables(eth_usdc, me, trades, expected):
    for kind, quantity, price, month, fee in trades:
        action = buy if kind.startswith("buy") else sell
        action(eth_usdc, me, quantity, price, at(month), fee, maker=kind.endswith("maker"))
    rows = realized_gains(account=me, year=2024)
    assert [(r.quantity, r.proceeds, r.cost_basis, r.gain) for r in rows] == expected


def test_only_the_years_disposals_are_reported_but_earlier_ones_used_their_lots(eth_usdc, me):
    buy(eth_usdc, me, "2", "100", at(11, year=2023))
    buy(eth_usdc, me, "2", "150", at(12, year=2023))
    sell(eth_usdc, me, "3", "160", at(12, 20, year=2023))  # lot 1 and half of lot 2
    sell(eth_usdc, me, "1", "170", at(1, 5))
    sell(eth_usdc, me, "1", "170", at(1, 1, year=2025))

    assert table(realized_gains(account=me, year=2024)) == [
        (at(1, 5), "ETH", D(1), D(170), D(150), D(20), at(12, year=2023)),
    ]
    assert len(realized_gains(account=me, year=2023)) == 2


def test_markets_keep_their_own_lots_and_currency(eth_usdc, me):
    btc = AssetFactory(symbol="BTC")
    eth_btc = MarketFactory(base=eth_usdc.base, quote=btc)
    buy(eth_usdc, me, "1", "100", at(1))
    buy(eth_btc, me, "1", "0.05", at(2))
    sell(eth_btc, me, "1", "0.06", at(3))

    [row] = realized_gains(account=me, year=2024)
    assert (row.currency, row.proceeds, row.cost_basis, row.gain) == (
        "BTC",
        D("0.06"),
        D("0.05"),
        D("0.01"),
    )


def test_other_accounts_trades_are_not_in_the_report(eth_usdc, me):
    someone = AccountFactory()
    buy(eth_usdc, someone, "1", "100", at(1))
    sell(eth_usdc, someone, "1", "120", at(2))
    assert realized_gains(account=me, year=2024) == []


def test_the_command_writes_the_csv(eth_usdc, me, tmp_path):
    buy(eth_usdc, me, "2", "100", at(1, 10), fee="0.1")
    sell(eth_usdc, me, "1", "130", at(4), fee="0.13")
    sell(eth_usdc, me, "2", "130", at(5))  # one more than bought

    out = io.StringIO()
    call_command("gains_report", account=me.pk, year=2024, stdout=out)

    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == CSV_HEADER
    assert [r[:8] for r in rows[1:]] == [
        # Lot cost 200.1: half is 100.05.
        ["2024-04-01", "ETH", "1.00000000", "129.87000000", "100.05000000", "29.82000000",
         "2024-01-10", "USDC"],
        ["2024-05-01", "ETH", "1.00000000", "130.00000000", "100.05000000", "29.95000000",
         "2024-01-10", "USDC"],
        ["2024-05-01", "ETH", "1.00000000", "130.00000000", "", "", "", "USDC"],
    ]  # fmt: skip
    assert out.getvalue() == gains_report_csv(account=me, year=2024)

    path = tmp_path / "gains.csv"
    call_command("gains_report", "--account", str(me.pk), "--year", "2024", "--output", str(path),
                 stderr=io.StringIO())  # fmt: skip
    assert path.read_bytes().decode() == out.getvalue()


def test_the_command_refuses_an_unknown_account(db):
    with pytest.raises(CommandError, match="no account"):
        call_command("gains_report", account=999_999_999, year=2024)
