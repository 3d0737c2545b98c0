"""Staff see an account's portfolio in the admin — positions, P&L, trading windows,
series metrics and a value chart drawn as inline SVG — built from real trades and
snapshots, for staff who may view accounts and nobody else."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from exchange.matcher.market import MarketMatcher
from portfolio import tasks
from portfolio.charts import LEFT, TOP, line_chart
from portfolio.models import PortfolioSnapshot, Position, SnapshotKind, TradingStats
from tests.factories import place_order

pytestmark = pytest.mark.django_db

D = Decimal
HOUR = datetime(2024, 3, 5, 10, tzinfo=UTC)


def portfolio_url(account) -> str:
    return reverse("admin:exchange_account_portfolio", args=[account.pk])


@pytest.fixture
def viewer(client, staff):
    """A staff user allowed to view accounts and balances, logged in."""
    staff.user_permissions.add(
        Permission.objects.get(codename="view_account"),
        Permission.objects.get(codename="view_balance"),
    )
    client.force_login(staff)
    return client


@pytest.fixture
def traded(market, buyer, seller):
    """Through the matcher: the buyer takes 2 ETH at 100, then 1 at 110 (the mark)."""
    matcher = MarketMatcher(market)
    place_order(seller, market, "SELL", "2", "100")
    place_order(buyer, market, "BUY", "2", "100")
    matcher.run_batch()
    place_order(seller, market, "SELL", "1", "110")
    matcher.run_batch()
    place_order(buyer, market, "BUY", "1", "110")
    matcher.run_batch()
    return market


def snapshot(account, kind, start: datetime, length: timedelta) -> None:
    args = (account.pk, kind, start.isoformat(), (start + length).isoformat())
    assert tasks.snapshot_take.apply(args=args).get() is True


def polyline_points(content: bytes) -> list[str]:
    match = re.search(rb'<polyline[^>]* points="([^"]*)"', content)
    assert match, "no polyline on the page"
    return match.group(1).decode().split()


def rows(content: bytes, css_class: str) -> list[list[str]]:
    html = content.decode()
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh][^>]*>.*?</t[dh]>", r)]
        for r in re.findall(rf'<tr class="{css_class}">(.*?)</tr>', html, re.S)
    ]


def test_the_page_shows_positions_and_pnl_from_real_trades(viewer, traded, buyer):
    response = viewer.get(portfolio_url(buyer))
    assert response.status_code == 200

    position = Position.objects.get(account=buyer)
    assert (position.quantity, position.cost_basis) == (D(3), D(310))
    [row] = rows(response.content, "position")
    assert row == [
        "ETH",
        "USDC",
        str(position.quantity),
        str(position.average_entry_price),
        "310.00000000",
        str(position.realized_pnl),
        str(position.fees_paid),
        "110.00000000",  # the last trade's price
        "20.00000000",  # 3 × 110 − 310
        "2",
    ]
    # Totals in USDC: the cash left plus 3 ETH at 110, and the same P&L.
    [total] = rows(response.content, "total")
    cash = D(10000) - D(310) - position.fees_paid
    assert total[:5] == [
        "USDC",
        f"{cash + 330:.8f}",
        "20.00000000",
        str(position.realized_pnl),
        str(position.fees_paid),
    ]
    # The trading windows sum today's stats row: two taker buys for 310.
    stats = TradingStats.objects.get(account=buyer)
    windows = rows(response.content, "window")
    assert [w[1] for w in windows] == ["24 h", "7 d", "30 d"]
    for window in windows:
        assert window[2] == window[3] == str(stats.quote_volume) == "310.00000000"
        assert window[5:7] == ["2", "0 / 2"]


def test_a_portfolio_without_trades_or_snapshots_shows_dashes(viewer, buyer):
    response = viewer.get(portfolio_url(buyer))
    assert response.status_code == 200
    assert b"No positions" in response.content
    assert b"No snapshots yet" in response.content
    assert b"<polyline" not in response.content
    assert [value for _, value in rows(response.content, "metric")] == ["\u2014"] * 5


def test_the_chart_has_one_point_per_snapshot(viewer, traded, buyer):
    for i in range(4):
        snapshot(buyer, SnapshotKind.INTERVAL, HOUR + timedelta(hours=i), timedelta(hours=1))
    response = viewer.get(portfolio_url(buyer))
    assert b'<svg class="value-chart"' in response.content
    assert len(polyline_points(response.content)) == 4
    # The other series has none yet.
    daily = viewer.get(portfolio_url(buyer), {"series": "DAILY"})
    assert b"No snapshots yet" in daily.content


def test_the_metrics_come_from_the_daily_series(viewer, traded, buyer):
    day = datetime(2024, 3, 1, tzinfo=UTC)
    for i in range(3):
        snapshot(buyer, SnapshotKind.DAILY, day + timedelta(days=i), timedelta(days=1))
    assert PortfolioSnapshot.objects.filter(account=buyer, kind="DAILY").count() == 3
    response = viewer.get(portfolio_url(buyer), {"series": "DAILY"})
    metrics = dict(rows(response.content, "metric"))
    # A flat series: no gain, no drawdown, no spread (so no Sharpe ratio).
    assert metrics == {
        "Return on investment": "0.00%",
        "Volatility (annualised)": "0.00%",
        "Sharpe ratio (annualised)": "\u2014",
        "Max drawdown": "0.00%",
        "1-day VaR (95%, historical)": "0.00%",
    }
    assert len(polyline_points(response.content)) == 3


def test_anyone_not_staff_is_sent_to_log_in(client, django_user_model, buyer):
    assert client.get(portfolio_url(buyer)).url.startswith(reverse("admin:login"))
    client.force_login(django_user_model.objects.create_user("trader-1", password="x"))
    response = client.get(portfolio_url(buyer))
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


def test_staff_without_view_permission_on_accounts_are_refused(client, staff, buyer):
    client.force_login(staff)
    assert client.get(portfolio_url(buyer)).status_code == 403


def test_staff_who_may_not_read_balances_are_refused(client, staff, buyer):
    staff.user_permissions.add(Permission.objects.get(codename="view_account"))
    client.force_login(staff)
    assert client.get(portfolio_url(buyer)).status_code == 403


def test_an_unknown_account_is_not_found(viewer):
    assert viewer.get(reverse("admin:exchange_account_portfolio", args=[10**9])).status_code == 404


def test_the_account_pages_link_to_the_portfolio(admin_client, buyer):
    link = f'href="{portfolio_url(buyer)}"'.encode()
    change = admin_client.get(reverse("admin:exchange_account_change", args=[buyer.pk]))
    assert link in change.content
    assert b">Portfolio</a>" in change.content
    assert link in admin_client.get(reverse("admin:exchange_account_changelist")).content


@pytest.mark.parametrize(
    "model", [Position, TradingStats, PortfolioSnapshot], ids=lambda m: m.__name__
)
def test_positions_stats_and_snapshots_are_listed_read_only(admin_client, traded, buyer, model):
    snapshot(buyer, SnapshotKind.INTERVAL, HOUR, timedelta(hours=1))
    name = model._meta.model_name
    response = admin_client.get(
        reverse(f"admin:portfolio_{name}_changelist"), {"q": buyer.wallet_address}
    )
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1
    assert admin_client.get(reverse(f"admin:portfolio_{name}_add")).status_code == 403
    row = model.objects.filter(account=buyer).first()
    change = admin_client.get(reverse(f"admin:portfolio_{name}_change", args=[row.pk]))
    assert b'name="_save"' not in change.content


# The chart's layout, as numbers.


def test_an_empty_series_has_no_chart():
    assert line_chart([]) is None


def test_the_chart_maps_time_to_x_and_value_to_y():
    series = [
        (HOUR, D(100)),
        (HOUR + timedelta(hours=1), D(300)),
        (HOUR + timedelta(hours=4), D(200)),
    ]
    chart = line_chart(series, width=500, height=200, ticks=3)
    (x0, y0), (x1, y1), (x2, y2) = chart.points
    assert (x0, x2) == (chart.left, chart.right) == (LEFT, 500 - (500 - chart.right))
    # Time, not index: the second point is a quarter of the way across.
    assert x1 == pytest.approx(chart.left + (chart.right - chart.left) / 4)
    assert (y0, y1) == (chart.bottom, TOP)  # the lowest value at the bottom, the highest on top
    assert y2 == pytest.approx((chart.top + chart.bottom) / 2)
    assert chart.polyline.split() == [f"{x:.1f},{y:.1f}" for x, y in chart.points]
    assert [t.label for t in chart.value_ticks] == ["100.00", "200.00", "300.00"]
    assert [t.at for t in chart.value_ticks] == [chart.bottom, pytest.approx(y2), chart.top]
    assert [t.label for t in chart.time_ticks] == ["03-05 10:00", "03-05 12:00", "03-05 14:00"]


def test_a_long_series_is_labelled_by_date_and_a_flat_one_sits_mid_height():
    series = [(HOUR + timedelta(days=i), D("1234.5")) for i in range(10)]
    chart = line_chart(series, ticks=2)
    middle = (chart.top + chart.bottom) / 2
    assert all(y == pytest.approx(middle) for _, y in chart.points)
    assert [t.label for t in chart.time_ticks] == ["2024-03-05", "2024-03-14"]
    assert chart.value_ticks[0].label < "1,234.50" < chart.value_ticks[-1].label


def test_a_single_snapshot_is_one_point_in_the_middle():
    chart = line_chart([(HOUR, D(0))])
    [(x, y)] = chart.points
    assert x == (chart.left + chart.right) / 2
    assert y == pytest.approx((chart.top + chart.bottom) / 2)
    assert [t.label for t in chart.time_ticks] == ["03-05 10:00"]
