"""Positions, P&L, snapshots and their metrics, trading statistics and the CSV exports
over the API: figures from trades the matcher settled, each trader seeing their own."""

import csv
import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.db import connection
from django.utils import timezone

from dex.api.rls import rls_scope
from exchange.matcher.market import MarketMatcher
from portfolio.models import PortfolioSnapshot, SnapshotKind
from portfolio.reports import gains_report_csv
from tests.api_support import Wallet, key_client
from tests.portfolio import sim

D = Decimal
V1 = "/api/v1"


@pytest.fixture(autouse=True)
def _no_reply_wait(settings):
    # The matcher runs in the test, after the request: the request need not wait.
    settings.ORDER_REPLY_TIMEOUT = 0.01


def _trade(market, maker_client, maker, taker_client, taker, side, price, quantity):
    """``maker`` rests ``side`` at ``price``; ``taker`` takes it."""
    other = "BUY" if side == "SELL" else "SELL"
    body = maker.order(market, side=side, price=price, quantity=quantity)
    assert maker_client.post(f"{V1}/orders/", body, format="json").status_code in {200, 201}
    MarketMatcher(market).run_batch()
    body = taker.order(market, side=other, price=price, quantity=quantity)
    assert taker_client.post(f"{V1}/orders/", body, format="json").status_code in {200, 201}
    MarketMatcher(market).run_batch()


@pytest.fixture
def traded(market, alice, bob, api, bob_api):
    """Alice buys 2 ETH at 100 from Bob (taker, 5 bps), then sells 1 at 110 to him
    (maker, 2 bps): the last trade, and so the mark, is 110."""
    _trade(market, bob_api, bob, api, alice, "SELL", "100", "2")
    _trade(market, api, alice, bob_api, bob, "SELL", "110", "1")


@pytest.fixture
def carol(market, base):
    """A trader with 2 ETH who has never traded."""
    wallet = Wallet.create(kyc_tier=1, country="FR")
    sim.deposit(wallet.account, base, "2")
    return wallet


def _snapshot(account, quote, day, value, net_flows="0", kind=SnapshotKind.DAILY):
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=day)
    return PortfolioSnapshot.objects.create(
        account=account,
        kind=kind,
        period_start=start,
        period_end=start + dt.timedelta(days=1),
        quote=quote,
        total_value=D(value),
        net_flows=D(net_flows),
        composition=[{"asset": "USDC", "quantity": value, "mark": "1", "value": value}],
    )


# --- Positions and P&L ---------------------------------------------------------------


def test_positions_are_marked_at_the_last_trade(traded, api, bob_api):
    [eth] = api.get(f"{V1}/positions/").json()
    assert (eth["asset"], eth["quote"]) == ("ETH", "USDC")
    assert D(eth["quantity"]) == 1
    assert D(eth["cost_basis"]) == 100
    assert D(eth["average_entry_price"]) == 100
    assert D(eth["fees_paid"]) == D("0.1") + D("0.022")
    assert D(eth["realized_pnl"]) == 110 - 100 - D("0.122")
    assert eth["trade_count"] == 2
    assert D(eth["mark"]) == 110
    assert D(eth["unrealized_pnl"]) == 10
    [bobs] = bob_api.get(f"{V1}/positions/").json()
    assert D(bobs["quantity"]) == 1
    assert D(bobs["cost_basis"]) == 110
    assert D(bobs["excess_sold"]) == 2


def test_pnl_sums_the_period_and_marks_what_is_held_now(traded, api):
    body = api.get(f"{V1}/pnl/").json()
    assert (body["since"], body["until"]) == (None, None)
    [usdc] = body["totals"]
    assert usdc["quote"] == "USDC"
    assert D(usdc["realized_pnl"]) == D("9.878")
    assert D(usdc["fees_paid"]) == D("0.122")
    assert D(usdc["quote_volume"]) == 310
    assert usdc["trade_count"] == 2
    assert D(usdc["unrealized_pnl"]) == 10
    usdc_held = D(10000) - 200 - D("0.1") + 110 - D("0.022")
    assert D(usdc["value"]) == usdc_held + 11 * 110
    assert usdc["unmarked_assets"] == []

    today = timezone.now().astimezone(dt.UTC).date()
    same_day = api.get(f"{V1}/pnl/", {"since": today, "until": today}).json()["totals"]
    assert D(same_day[0]["realized_pnl"]) == D("9.878")
    later = api.get(f"{V1}/pnl/", {"since": today + dt.timedelta(days=1)}).json()
    [usdc] = later["totals"]
    assert D(usdc["realized_pnl"]) == 0
    assert usdc["trade_count"] == 0
    assert D(usdc["unrealized_pnl"]) == 10  # unrealized is now, whatever the period
    assert later["since"] == (today + dt.timedelta(days=1)).isoformat()


def test_a_trader_who_never_traded_is_marked_at_the_markets_last_price(traded, carol):
    """The marks are public: under row-level security the caller sees only their own
    trades, and the valuation must not mark at those."""
    client = key_client(carol.account)
    [usdc] = client.get(f"{V1}/pnl/").json()["totals"]
    assert D(usdc["value"]) == 2 * 110
    assert usdc["unmarked_assets"] == []
    assert client.get(f"{V1}/positions/").json() == []
    with rls_scope(carol.account.pk), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM exchange_trade")
        assert cursor.fetchone() == (0,)
        cursor.execute("SELECT last_price FROM market_last_price")
        assert cursor.fetchall() == [(D(110),)]


def test_an_unmarked_asset_is_listed_and_left_out(market, carol):
    client = key_client(carol.account)
    [usdc] = client.get(f"{V1}/pnl/").json()["totals"]
    assert D(usdc["value"]) == 0
    assert usdc["unmarked_assets"] == ["ETH"]


# --- Snapshots and metrics -----------------------------------------------------------


def test_snapshots_are_the_callers_newest_first(api, alice, bob, quote):
    for day, value in enumerate(["100", "110", "99"]):
        _snapshot(alice.account, quote, day, value)
    _snapshot(alice.account, quote, 0, "5", kind=SnapshotKind.INTERVAL)
    _snapshot(bob.account, quote, 0, "777")
    page = api.get(f"{V1}/portfolio/snapshots/", {"kind": "daily"}).json()
    values = [D(s["total_value"]) for s in page["results"]]
    assert values == [99, 110, 100]
    first = page["results"][0]
    assert first["kind"] == "DAILY"
    assert first["quote"] == "USDC"
    assert first["composition"] == [{"asset": "USDC", "quantity": "99", "mark": "1", "value": "99"}]
    assert first["realized_pnl"] is None
    interval = api.get(f"{V1}/portfolio/snapshots/", {"kind": "interval"}).json()["results"]
    assert [D(s["total_value"]) for s in interval] == [5]
    ranged = api.get(
        f"{V1}/portfolio/snapshots/",
        {"since": "2025-01-02T00:00:00Z", "until": "2025-01-03T00:00:00Z"},
    ).json()["results"]
    assert [D(s["total_value"]) for s in ranged] == [110]
    paged = api.get(f"{V1}/portfolio/snapshots/", {"limit": 2}).json()
    assert len(paged["results"]) == 2
    assert paged["next"]
    rest = api.get(paged["next"]).json()
    assert [D(s["total_value"]) for s in rest["results"]] == [100]


def test_metrics_of_the_daily_series(api, alice, bob, quote):
    for day, value in enumerate(["100", "110", "99"]):
        _snapshot(alice.account, quote, day, value)
    _snapshot(bob.account, quote, 3, "1")  # not Alice's: a 99 % fall if it were
    body = api.get(f"{V1}/portfolio/metrics/", {"kind": "daily"}).json()
    assert body["kind"] == "DAILY"
    assert body["quote"] == "USDC"
    assert (body["snapshots"], body["returns"]) == (3, 2)
    # Returns +10 %, -10 %.
    assert body["volatility"] == pytest.approx(0.02**0.5 * 365**0.5)
    assert body["sharpe_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert body["max_drawdown"] == pytest.approx(0.1)
    assert body["value_at_risk_95"] == pytest.approx(0.1)
    assert body["roi"] == pytest.approx(-0.01)
    assert body["first_period_start"] == "2025-01-01T00:00:00Z"
    assert body["last_period_end"] == "2025-01-04T00:00:00Z"


@pytest.mark.parametrize("values", [[], ["100"], ["0", "0"]])
def test_metrics_of_too_short_a_series_are_null(api, alice, quote, values):
    for day, value in enumerate(values):
        _snapshot(alice.account, quote, day, value)
    response = api.get(f"{V1}/portfolio/metrics/")
    assert response.status_code == 200
    body = response.json()
    assert body["snapshots"] == len(values)
    assert body["returns"] == 0
    for name in ("volatility", "sharpe_ratio", "max_drawdown", "value_at_risk_95", "roi"):
        assert body[name] is None


# --- Trading statistics --------------------------------------------------------------


def test_stats_are_daily_rows_per_market(traded, api, market):
    today = timezone.now().astimezone(dt.UTC).date()
    [row] = api.get(f"{V1}/stats/").json()["results"]
    assert (row["market"], row["day"]) == (market.symbol, today.isoformat())
    assert (D(row["buy_volume"]), D(row["sell_volume"]), D(row["volume"])) == (2, 1, 3)
    assert (row["volume"], row["quote_volume"]) == ("3.00000000", "310.00000000")
    assert (D(row["buy_quote_volume"]), D(row["sell_quote_volume"])) == (200, 110)
    assert (row["trade_count"], row["maker_count"], row["taker_count"]) == (2, 1, 1)
    assert D(row["fees_paid"]) == D("0.122")
    assert D(row["realized_pnl"]) == D("9.878")
    assert api.get(f"{V1}/stats/", {"market": "BTC-USDC"}).json()["results"] == []
    assert api.get(f"{V1}/stats/", {"market": market.symbol, "until": today}).json()["results"]
    later = {"since": today + dt.timedelta(days=1)}
    assert api.get(f"{V1}/stats/", later).json()["results"] == []


def test_stats_windows(traded, api, bob_api):
    [usdc] = api.get(f"{V1}/stats/windows/").json()
    assert usdc["quote"] == "USDC"
    for window, days in (("h24", 1), ("d7", 7), ("d30", 30)):
        assert usdc[window]["days"] == days
        assert D(usdc[window]["quote_volume"]) == 310
        assert usdc[window]["trade_count"] == 2
        assert D(usdc[window]["realized_pnl"]) == D("9.878")
    [bobs] = bob_api.get(f"{V1}/stats/windows/").json()
    assert D(bobs["d30"]["fees_paid"]) == D("0.04") + D("0.055")


# --- CSV exports ---------------------------------------------------------------------


def _csv(response) -> list[dict]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(StringIO(response.content.decode())))


def test_fills_export_is_the_callers_fills_as_csv(traded, api, alice, market):
    response = api.get(f"{V1}/fills/export/", HTTP_ACCEPT="text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="fills.csv"'
    rows = _csv(response)
    assert [(r["side"], r["liquidity"], r["price"], r["quantity"]) for r in rows] == [
        ("BUY", "TAKER", "100.00000000", "2.00000000"),
        ("SELL", "MAKER", "110.00000000", "1.00000000"),
    ]
    assert [D(r["fee"]) for r in rows] == [D("0.1"), D("0.022")]
    assert {r["market"] for r in rows} == {market.symbol}
    assert {r["fee_asset"] for r in rows} == {"USDC"}
    orders = set(alice.account.orders.values_list("pk", flat=True))
    assert {int(r["order_id"]) for r in rows} <= orders
    first = dt.datetime.fromisoformat(rows[0]["executed_at"].replace("Z", "+00:00"))
    assert rows[0]["trade_id"]

    after_first = {"since": (first + dt.timedelta(microseconds=1)).isoformat()}
    response = api.get(f"{V1}/fills/export/", after_first)
    assert [r["side"] for r in _csv(response)] == ["SELL"]
    assert response["Content-Disposition"].startswith('attachment; filename="fills-from-')
    empty = api.get(f"{V1}/fills/export/", {"until": "2000-01-01T00:00:00Z"})
    assert empty.content.decode().splitlines() == [",".join(_fills_header())]


def _fills_header():
    from portfolio.api.views import FILLS_CSV_HEADER

    return FILLS_CSV_HEADER


def test_gains_report_is_the_years_fifo_gains_as_csv(traded, api, alice):
    year = timezone.now().astimezone(dt.UTC).year
    response = api.get(f"{V1}/reports/gains/", {"year": year})
    assert response["Content-Disposition"] == f'attachment; filename="gains-{year}.csv"'
    assert response.content.decode() == gains_report_csv(account=alice.account, year=year)
    [row] = _csv(response)
    assert (row["asset"], row["currency"], row["quantity"]) == ("ETH", "USDC", "1.00000000")
    assert D(row["proceeds"]) == 110 - D("0.022")
    assert D(row["cost_basis"]) == (200 + D("0.1")) / 2
    assert D(row["gain"]) == D(row["proceeds"]) - D(row["cost_basis"])
    assert _csv(api.get(f"{V1}/reports/gains/", {"year": year - 1})) == []


# --- Isolation -----------------------------------------------------------------------


def test_a_trader_sees_none_of_anothers_figures(traded, market, quote, carol):
    _snapshot(carol.account, quote, 0, "1")
    client = key_client(carol.account)
    assert client.get(f"{V1}/positions/").json() == []
    assert client.get(f"{V1}/stats/").json()["results"] == []
    assert client.get(f"{V1}/portfolio/snapshots/").json()["results"] != []
    snapshots = client.get(f"{V1}/portfolio/snapshots/").json()["results"]
    assert [D(s["total_value"]) for s in snapshots] == [1]
    [usdc] = client.get(f"{V1}/stats/windows/").json()
    assert usdc["d30"]["trade_count"] == 0
    [pnl] = client.get(f"{V1}/pnl/").json()["totals"]
    assert D(pnl["realized_pnl"]) == 0
    assert pnl["trade_count"] == 0
    assert _csv(client.get(f"{V1}/fills/export/")) == []
    year = timezone.now().astimezone(dt.UTC).year
    assert _csv(client.get(f"{V1}/reports/gains/", {"year": year})) == []


@pytest.mark.parametrize(
    "table", ["portfolio_position", "portfolio_tradingstats", "portfolio_portfoliosnapshot"]
)
def test_row_level_security_shows_only_the_callers_rows(traded, alice, bob, quote, table):
    _snapshot(alice.account, quote, 0, "1")
    _snapshot(bob.account, quote, 0, "2")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT account_id FROM {table}")
        assert {r[0] for r in cursor.fetchall()} == {alice.account.pk, bob.account.pk}
    for account in (alice.account, bob.account):
        with rls_scope(account.pk), connection.cursor() as cursor:
            cursor.execute(f"SELECT account_id FROM {table}")
            rows = cursor.fetchall()
        assert rows
        assert {r[0] for r in rows} == {account.pk}
    with rls_scope(0), connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        assert cursor.fetchone() == (0,)


# --- Bad query strings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("pnl/", {"since": "yesterday"}),
        ("pnl/", {"since": "2025-02-01", "until": "2025-01-01"}),
        ("portfolio/snapshots/", {"kind": "weekly"}),
        ("portfolio/snapshots/", {"since": "2025-02-01T00:00:00Z", "until": "2025-01-01"}),
        ("portfolio/metrics/", {"kind": "hourly"}),
        ("stats/", {"until": "2025-13-01"}),
        ("stats/", {"market": "X" * 26}),
        ("fills/export/", {"since": "not a time"}),
        ("fills/export/", {"since": "0001-01-01T00:00:00+05:00"}),
        ("reports/gains/", {}),
        ("reports/gains/", {"year": "twenty"}),
        ("reports/gains/", {"year": "99999"}),
    ],
)
def test_bad_query_strings_are_400(api, path, params):
    # A download's client accepts CSV; its errors are still the API's JSON.
    accept = "text/csv" if path in {"fills/export/", "reports/gains/"} else "application/json"
    response = api.get(f"{V1}/{path}", params, HTTP_ACCEPT=accept)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "VALIDATION_ERROR"


def test_the_endpoints_need_a_credential(client):
    for path in ("positions/", "pnl/", "stats/", "fills/export/", "reports/gains/?year=2025"):
        assert client.get(f"{V1}/{path}").status_code == 401


def test_metrics_include_win_rate_and_trade_size_over_the_series_window(traded, api, alice, quote):
    now = timezone.now()
    for offset, value in ((-1, "10000"), (0, "10010")):
        start = now + dt.timedelta(days=offset)
        PortfolioSnapshot.objects.create(
            account=alice.account,
            kind=SnapshotKind.DAILY,
            period_start=start,
            period_end=start + dt.timedelta(days=1),
            quote=quote,
            total_value=D(value),
            net_flows=D(0),
            composition=[],
        )
    body = api.get(f"{V1}/portfolio/metrics/", {"kind": "daily"}).json()
    # Alice's one sale (1 ETH at 110, bought at 100 plus its share of fees) gained.
    assert body["win_rate"] == 1.0
    # Her two trades: 2 ETH at 100 and 1 ETH at 110.
    assert body["average_trade_size"] == pytest.approx((200 + 110) / 2)


def test_win_rate_and_trade_size_are_null_without_trades_in_the_window(traded, api, alice, quote):
    for day, value in enumerate(["100", "110"]):
        _snapshot(alice.account, quote, day, value)  # in 2025: before every trade
    body = api.get(f"{V1}/portfolio/metrics/", {"kind": "daily"}).json()
    assert (body["win_rate"], body["average_trade_size"]) == (None, None)
