"""The surveillance detectors against generated trading.

Normal flow comes from the market simulator (``exchange.simulator``: demo traders
trading through the order services, signed as the API's clients sign) matched by the
real matcher (``MarketMatcher``, the code ``run_matcher`` runs, driven in-process as
tests/exchange/test_simulator.py drives it). Each abusive pattern is planted into that
flow through the same order services and matcher — wash trades between two accounts of
one beneficial owner, a layering sequence, an order/cancel burst — except the volume
and price spike, whose quiet history must span many past windows: those trades are
written at chosen moments with ``tests.trades.trade_at``, as the matcher writes them.
"""

from __future__ import annotations

import itertools
import statistics
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from compliance import tasks
from compliance.models import (
    AlertKind,
    AlertSeverity,
    AlertStatus,
    BeneficialOwner,
    BeneficialOwnership,
    SurveillanceAlert,
)
from compliance.services import alerts
from compliance.surveillance import (
    order_bursts,
    runner,
    spoofing,
    unusual_activity,
    wash_trading,
)
from compliance.surveillance.config import SurveillanceConfig
from compliance.surveillance.findings import Window
from dex import celery_app
from exchange.matcher.market import MarketMatcher
from exchange.models import (
    LIVE_STATUSES,
    Account,
    Market,
    Order,
    OrderStatus,
    Side,
    Trade,
)
from exchange.services.orders import order_cancel
from exchange.simulator import Simulator, simulator_for_demo
from tests.factories import AccountFactory, AssetFactory, MarketFactory, place_order
from tests.portfolio import sim
from tests.trades import trade_at

pytestmark = pytest.mark.django_db

D = Decimal
CONFIG = SurveillanceConfig()  # the defaults settings.SURVEILLANCE ships with
BACKGROUND_STEPS = 160
_owner_refs = itertools.count(1)


# --------------------------------------------------------------------------------------
# Generated trading
# --------------------------------------------------------------------------------------


@pytest.fixture
def demo(tmp_path):
    call_command("seed_demo", password_file=tmp_path / "pw")


@pytest.fixture
def flow(demo):
    """ETH-USDC after a stretch of simulated trading, with its matcher."""
    return Flow(simulator_for_demo(symbols=["ETH-USDC"], seed=11))


class Flow:
    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.market: Market = simulator.states[0].market
        self.matcher = MarketMatcher(self.market)
        self.started = timezone.now()

    def drain(self, *_) -> None:
        while self.matcher.run_batch().commands:
            pass

    def steps(self, count: int) -> None:
        for step in range(1, count + 1):
            self.simulator.step()
            if step % 8 == 0:
                self.drain()
        self.drain()

    def touch(self) -> tuple[Decimal, Decimal]:
        live = Order.objects.filter(market=self.market, status__in=LIVE_STATUSES)
        bid = live.filter(side=Side.BUY).order_by("-price").values_list("price", flat=True)[0]
        ask = live.filter(side=Side.SELL).order_by("price").values_list("price", flat=True)[0]
        return bid, ask

    def window(self) -> Window:
        """From just before the flow started to just after now."""
        return Window(self.started - timedelta(seconds=1), timezone.now() + timedelta(seconds=1))

    def trader(self, *, usdc: str = "0", eth: str = "0") -> Account:
        account = AccountFactory(kyc_tier=2)
        if D(usdc):
            sim.deposit(account, self.market.quote, usdc)
        if D(eth):
            sim.deposit(account, self.market.base, eth)
        return account

    def on_tick(self, price: Decimal) -> Decimal:
        tick = self.market.tick_size
        return (price / tick).to_integral_value(ROUND_FLOOR) * tick


def linked(*accounts: Account) -> BeneficialOwner:
    owner = BeneficialOwner.objects.create(
        name=f"Owner {len(accounts)}", reference=f"BO-{next(_owner_refs)}"
    )
    for account in accounts:
        BeneficialOwnership.objects.create(owner=owner, account=account)
    return owner


def kinds(findings) -> list[str]:
    return sorted(f.kind for f in findings)


# --------------------------------------------------------------------------------------
# Wash trading
# --------------------------------------------------------------------------------------


def test_wash_trades_between_two_accounts_of_one_owner_are_found(flow):
    flow.steps(BACKGROUND_STEPS)
    seller, buyer = flow.trader(eth="5"), flow.trader(usdc="20000")
    owner = linked(seller, buyer)
    planted = []
    for _ in range(3):
        bid, ask = flow.touch()
        price = flow.on_tick((bid + ask) / 2)  # inside the spread: only the pair meets there
        place_order(seller, flow.market, "SELL", "0.5", price)
        flow.drain()
        taker = place_order(buyer, flow.market, "BUY", "0.5", price, time_in_force="IOC")
        flow.drain()
        planted.extend(Trade.objects.filter(taker_order=taker))
    assert [(t.buyer_id, t.seller_id) for t in planted] == [(buyer.pk, seller.pk)] * 3

    findings = wash_trading.detect(market=flow.market, window=flow.window(), config=CONFIG)

    assert len(findings) == 1
    finding = findings[0]
    assert finding.kind == AlertKind.WASH_TRADING
    assert finding.subject == f"owner-{owner.pk}"
    assert finding.account_id == min(seller.pk, buyer.pk)
    evidence = finding.evidence
    assert [t["id"] for t in evidence["trades"]] == [t.pk for t in planted]
    assert evidence["figures"]["trade_count"] == 3
    assert D(evidence["figures"]["quantity"]) == D("1.5")
    assert D(evidence["figures"]["notional"]) == sum(t.quote_quantity for t in planted)
    assert {a["id"] for a in evidence["accounts"]} == {seller.pk, buyer.pk}
    assert evidence["owner"]["reference"] == owner.reference
    assert evidence["thresholds"]["wash_min_trades"] == CONFIG.wash_min_trades


def test_linked_accounts_below_the_minimum_trades_are_not_reported(flow):
    flow.steps(40)
    seller, buyer = flow.trader(eth="1"), flow.trader(usdc="5000")
    linked(seller, buyer)
    bid, ask = flow.touch()
    price = flow.on_tick((bid + ask) / 2)
    place_order(seller, flow.market, "SELL", "0.5", price)
    flow.drain()
    place_order(buyer, flow.market, "BUY", "0.5", price, time_in_force="IOC")
    flow.drain()
    assert Trade.objects.filter(buyer=buyer, seller=seller).count() == 1

    assert wash_trading.detect(market=flow.market, window=flow.window(), config=CONFIG) == []


# --------------------------------------------------------------------------------------
# Spoofing / layering
# --------------------------------------------------------------------------------------


def test_a_layering_sequence_with_a_trade_on_the_other_side_is_found(flow):
    flow.steps(BACKGROUND_STEPS)
    spoofer = flow.trader(usdc="100000", eth="1")
    bid, _ = flow.touch()
    median, sample = spoofing.typical_quantity(
        market=flow.market, window=flow.window(), config=CONFIG
    )
    assert sample >= CONFIG.spoof_min_baseline_orders
    size = (median * 15).quantize(D("0.0001"))
    # Three large bids stacked just under the best bid: the book looks bid up…
    layers = [
        place_order(spoofer, flow.market, "BUY", size, bid - k * flow.market.tick_size)
        for k in (1, 2, 3)
    ]
    flow.drain()
    # …the spoofer sells into the real bids meanwhile…
    sale = place_order(
        spoofer, flow.market, "SELL", "0.2", flow.on_tick(bid * D("0.99")), time_in_force="IOC"
    )
    flow.drain()
    # …and pulls the layers.
    for order in layers:
        order_cancel(account=spoofer, order=order)
    flow.drain()
    for order in layers:
        order.refresh_from_db()
        assert order.status == OrderStatus.CANCELLED
        assert order.filled == 0
    sold = list(Trade.objects.filter(taker_order=sale))
    assert sold

    findings = spoofing.detect(market=flow.market, window=flow.window(), config=CONFIG)

    assert [(f.kind, f.account_id, f.severity) for f in findings] == [
        (AlertKind.SPOOFING, spoofer.pk, AlertSeverity.HIGH)
    ]
    evidence = findings[0].evidence
    assert [o["id"] for o in evidence["orders"]] == [o.pk for o in layers]
    assert all(D(o["lifetime_seconds"]) <= CONFIG.spoof_cancel_seconds for o in evidence["orders"])
    # Shown near the touch: within a few basis points of the last trade.
    assert all(abs(D(o["distance_bps"])) < 50 for o in evidence["orders"])
    assert [t["id"] for t in evidence["trades"]] == [t.pk for t in sold]
    figures = evidence["figures"]
    assert figures["pattern"] == "layering"
    assert figures["side"] == "BUY"
    assert len(figures["price_levels"]) == 3
    every_limit_order = Order.objects.filter(market=flow.market, type="LIMIT")
    assert D(figures["median_quantity"]) == statistics.median_low(
        every_limit_order.values_list("quantity", flat=True)
    )


def test_large_orders_that_trade_are_not_spoofing(flow):
    flow.steps(BACKGROUND_STEPS)
    whale = flow.trader(usdc="100000")
    median, _ = spoofing.typical_quantity(market=flow.market, window=flow.window(), config=CONFIG)
    size = (median * 15).quantize(D("0.0001"))
    for _ in range(3):  # each sweeps the asks, rests, and is cancelled within a second
        _, ask = flow.touch()
        order = place_order(whale, flow.market, "BUY", size, flow.on_tick(ask * D("1.01")))
        flow.drain()
        order.refresh_from_db()
        if order.status in LIVE_STATUSES:
            order_cancel(account=whale, order=order)
            flow.drain()
        order.refresh_from_db()
        assert order.filled > size * CONFIG.spoof_max_fill_ratio
        flow.steps(40)  # the market maker quotes again

    assert spoofing.detect(market=flow.market, window=flow.window(), config=CONFIG) == []


# --------------------------------------------------------------------------------------
# Order/cancel bursts
# --------------------------------------------------------------------------------------


def test_an_order_cancel_burst_is_found(flow):
    flow.steps(BACKGROUND_STEPS)
    stuffer = flow.trader(usdc="50000")
    bid, _ = flow.touch()
    burst = []
    for k in range(60):
        order = place_order(
            stuffer, flow.market, "BUY", "0.01", flow.on_tick(bid * D("0.95")) - k * D("0.01")
        )
        burst.append(order)
        if k % 10 == 9:
            flow.drain()
            for placed in burst[-10:]:
                order_cancel(account=stuffer, order=placed)
            flow.drain()
    assert Order.objects.filter(account=stuffer, status=OrderStatus.CANCELLED).count() == 60

    findings = order_bursts.detect(market=flow.market, window=flow.window(), config=CONFIG)

    mine = [f for f in findings if f.account_id == stuffer.pk]
    assert len(mine) == 1
    figures = mine[0].evidence["figures"]
    assert figures["placed"] == 60
    assert figures["cancelled"] == 60
    assert D(figures["cancel_ratio"]) == 1
    assert D(figures["placing_seconds"]) < CONFIG.burst_seconds
    assert mine[0].severity == AlertSeverity.MEDIUM
    assert [o["id"] for o in mine[0].evidence["orders"]] == [o.pk for o in burst]


def test_many_orders_mostly_kept_are_not_a_burst(flow):
    stuffer = flow.trader(usdc="50000")
    orders = [
        place_order(stuffer, flow.market, "BUY", "0.01", D("2000") - k * D("0.01"))
        for k in range(60)
    ]
    flow.drain()
    for order in orders[:40]:  # two thirds cancelled: below the ratio
        order_cancel(account=stuffer, order=order)
    flow.drain()

    findings = order_bursts.detect(market=flow.market, window=flow.window(), config=CONFIG)

    assert [f for f in findings if f.account_id == stuffer.pk] == []


def test_a_burst_across_the_edge_of_two_windows_is_found_once(market):
    """60 orders placed and cancelled within 6 s, starting 3 s before a window's end:
    half in each window. The window the burst starts in reports it, whole; the next
    window, whose own spans hold only the second half, does not."""
    import pgtrigger

    from tests.factories import OrderFactory

    stuffer = AccountFactory()
    edge = datetime(2026, 3, 2, 9, 5, tzinfo=UTC)
    for k in range(60):
        placed = edge - timedelta(seconds=3) + timedelta(milliseconds=100 * k)
        order = OrderFactory(account=stuffer, market=market, price=D("100.00"), quantity=D(1))
        order.sequence, order.accepted_at = order.pk, timezone.now()
        order.status, order.reason, order.done_at = "CANCELLED", "USER_REQUEST", timezone.now()
        order.save()
        with pgtrigger.ignore(
            "exchange.Order:identity_read_only", "exchange.Order:finished_read_only"
        ):
            Order.objects.filter(pk=order.pk).update(
                created_at=placed, accepted_at=placed, done_at=placed + timedelta(seconds=0.2)
            )
    step = timedelta(seconds=CONFIG.window_seconds)

    before = order_bursts.detect(market=market, window=Window(edge - step, edge), config=CONFIG)
    after = order_bursts.detect(market=market, window=Window(edge, edge + step), config=CONFIG)

    assert [f.account_id for f in before] == [stuffer.pk]
    figures = before[0].evidence["figures"]
    assert (figures["placed"], figures["cancelled"], figures["orders_in_window"]) == (60, 60, 30)
    assert after == []


# --------------------------------------------------------------------------------------
# Unusual volume and price moves
# --------------------------------------------------------------------------------------

T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def quiet_market(db):
    """A market with 24 quiet minutes of trading before ``T0``: about one ETH a minute,
    the price drifting a few basis points."""
    market = MarketFactory(base=AssetFactory(symbol="QET"), quote=AssetFactory(symbol="QUS"))
    price = D("100.00")
    for minute in range(24, 0, -1):
        start = T0 - minute * MINUTE
        for k, quantity in enumerate(("0.4", "0.35", "0.3") if minute % 2 else ("0.5", "0.45")):
            price += D("0.03") if (minute + k) % 3 else D("-0.04")
            trade_at(market, price, quantity, start + timedelta(seconds=10 + 15 * k))
    return market


def minute_config(**overrides) -> SurveillanceConfig:
    return SurveillanceConfig(window_seconds=60, **overrides)


def test_a_volume_and_price_spike_against_quiet_history_is_found(quiet_market):
    last = Trade.objects.filter(market=quiet_market).order_by("-sequence")[0].price
    spike = []
    for k in range(6):  # 24 ETH, the price marked up 6 %
        spike.append(
            trade_at(
                quiet_market,
                (last * D("1.01") ** (k + 1)).quantize(D("0.01")),
                "4",
                T0 + timedelta(seconds=5 * k),
            )
        )
    window = Window(T0, T0 + MINUTE)

    findings = unusual_activity.detect(market=quiet_market, window=window, config=minute_config())

    by_kind = {f.kind: f for f in findings}
    assert sorted(by_kind) == [AlertKind.PRICE_MOVE, AlertKind.UNUSUAL_VOLUME]
    volume = by_kind[AlertKind.UNUSUAL_VOLUME].evidence
    assert D(volume["figures"]["quantity"]) == 24
    assert D(volume["figures"]["history_mean"]) == 1  # 24 ETH over 24 minutes
    assert D(volume["figures"]["threshold"]) == 5  # the ratio rule binds
    assert len(volume["history"]) == 24
    assert {t["id"] for t in volume["trades"]} == {t.pk for t in spike}
    assert by_kind[AlertKind.UNUSUAL_VOLUME].severity == AlertSeverity.HIGH
    price = by_kind[AlertKind.PRICE_MOVE].evidence["figures"]
    assert D(price["previous_close"]) == last
    assert D(price["close"]) == spike[-1].price
    assert D(price["return_bps"]) > 580  # ln(1.01 ** 6) ≈ 597 bps
    assert D(price["threshold_bps"]) == CONFIG.price_min_move_bps  # the floor binds
    assert all(f.account_id is None and f.subject == "market" for f in findings)


def test_quiet_history_itself_is_not_unusual(quiet_market):
    for minutes_back in (1, 2, 3):
        window = Window(T0 - minutes_back * MINUTE, T0 - (minutes_back - 1) * MINUTE)
        assert (
            unusual_activity.detect(
                market=quiet_market,
                window=window,
                config=minute_config(activity_min_history_windows=10),
            )
            == []
        )


def test_a_market_without_enough_history_is_not_judged(quiet_market):
    trade_at(quiet_market, "150", "50", T0 + timedelta(seconds=5))
    config = minute_config(activity_min_history_windows=25)

    assert (
        unusual_activity.measure(market=quiet_market, window=Window(T0, T0 + MINUTE), config=config)
        is None
    )
    assert (
        unusual_activity.detect(market=quiet_market, window=Window(T0, T0 + MINUTE), config=config)
        == []
    )


# --------------------------------------------------------------------------------------
# Normal flow stays quiet
# --------------------------------------------------------------------------------------

PACED_RATE = 12.0  # service calls a second; `make run` simulates at 3
PACED_STEPS = 240


def test_normal_simulator_flow_raises_nothing(demo):
    """The simulator at a steady pace (the matcher draining between calls, as the
    running one does), with two takers that belong to one owner: not one detector
    fires, although each had enough flow to judge."""
    simulator = simulator_for_demo(symbols=["ETH-USDC"], seed=5)
    flow = Flow(simulator)
    takers = [t.account for t in simulator.takers]
    linked(takers[0], takers[1])
    flow.steps(24)  # the market maker fills its book first
    started = timezone.now()
    simulator.run(rate=PACED_RATE, steps=PACED_STEPS, progress=flow.drain, progress_every=0.1)
    flow.drain()
    window = Window(started - timedelta(seconds=1), timezone.now() + timedelta(seconds=1))

    # Enough flow for every detector to judge:
    assert Trade.objects.filter(market=flow.market).count() >= 60
    _, sample = spoofing.typical_quantity(market=flow.market, window=window, config=CONFIG)
    assert sample >= CONFIG.spoof_min_baseline_orders
    maker = simulator.maker.account
    assert Order.objects.filter(account=maker, status=OrderStatus.CANCELLED).count() >= 30
    assert Trade.objects.filter(buyer__in=takers[:2]).exists()

    assert wash_trading.detect(market=flow.market, window=window, config=CONFIG) == []
    assert spoofing.detect(market=flow.market, window=window, config=CONFIG) == []
    assert order_bursts.detect(market=flow.market, window=window, config=CONFIG) == []

    # Volume and price second by second, each against the eight seconds before it.
    seconds = SurveillanceConfig(activity_lookback_windows=8, activity_min_history_windows=6)
    judged = 0
    for one in runner.windows_between(window.start, window.end - timedelta(seconds=1), 1):
        judged += (
            unusual_activity.measure(market=flow.market, window=one, config=seconds) is not None
        )
        assert unusual_activity.detect(market=flow.market, window=one, config=seconds) == [], one
    assert judged >= 10


# --------------------------------------------------------------------------------------
# Alerts: raised once, by the scheduled task too
# --------------------------------------------------------------------------------------


def test_a_rerun_over_the_same_window_raises_nothing_new(flow):
    flow.steps(40)
    seller, buyer = flow.trader(eth="2"), flow.trader(usdc="10000")
    owner = linked(seller, buyer)
    for _ in range(2):
        bid, ask = flow.touch()
        price = flow.on_tick((bid + ask) / 2)
        place_order(seller, flow.market, "SELL", "0.3", price)
        flow.drain()
        place_order(buyer, flow.market, "BUY", "0.3", price, time_in_force="IOC")
        flow.drain()
    window = flow.window()

    first = alerts.surveillance_scan(market=flow.market, window=window)
    again = alerts.surveillance_scan(market=flow.market, window=window)

    assert [a.kind for a in first] == [AlertKind.WASH_TRADING]
    assert again == []
    alert = SurveillanceAlert.objects.get()
    assert alert.status == AlertStatus.OPEN
    assert alert.market == flow.market
    assert alert.account_id == min(seller.pk, buyer.pk)
    assert (alert.window_start, alert.window_end) == (window.start, window.end)
    assert alert.dedupe_key == f"WASH_TRADING:m{flow.market.pk}:owner-{owner.pk}:{window.key()}"


@pytest.fixture
def eager():
    """Tasks sent with ``.delay()`` run in place, as ``apply()`` runs them."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


def test_the_scheduled_task_scans_the_last_complete_windows_once(eager, settings, market):
    settings.SURVEILLANCE = {"WINDOW_SECONDS": 60, "SETTLE_SECONDS": 0, "CATCHUP_WINDOWS": 2}
    now = timezone.now()
    last_end = now - timedelta(seconds=now.timestamp() % 60)
    inside = last_end - timedelta(seconds=30)
    seller, buyer = AccountFactory(), AccountFactory()
    linked(seller, buyer)
    planted = [
        trade_at(market, "100", "1", inside, buyer=buyer, seller=seller),
        trade_at(market, "100.5", "1", inside + timedelta(seconds=5), buyer=buyer, seller=seller),
    ]

    fanned_out = tasks.surveillance_scan_all.apply().get()
    rerun = tasks.surveillance_scan_all.apply().get()

    assert fanned_out == rerun == 2  # one market, two windows
    alert = SurveillanceAlert.objects.get()
    assert alert.kind == AlertKind.WASH_TRADING
    assert alert.window_end == last_end
    assert alert.window_start == last_end - timedelta(seconds=60)
    assert [t["id"] for t in alert.evidence["trades"]] == [t.pk for t in planted]


def test_the_window_scan_task_returns_the_alerts_it_raised(market):
    seller, buyer = AccountFactory(), AccountFactory()
    linked(seller, buyer)
    start = datetime(2024, 1, 2, 3, 0, tzinfo=UTC)
    for k in range(2):
        trade_at(market, "100", "1", start + timedelta(seconds=k), buyer=buyer, seller=seller)
    args = (market.pk, start.isoformat(), (start + MINUTE).isoformat())

    raised = tasks.surveillance_scan.apply(args=args).get()
    again = tasks.surveillance_scan.apply(args=args).get()

    assert raised == [SurveillanceAlert.objects.get().pk]
    assert again == []


def test_windows_are_aligned_on_the_epoch_and_only_complete_ones_are_scanned():
    at = datetime(2024, 1, 1, 10, 2, 30, tzinfo=UTC)
    windows = runner.windows_between(at, at + timedelta(minutes=9), 300)
    assert [(w.start.minute, w.end.minute) for w in windows] == [(0, 5), (5, 10)]
    config = SurveillanceConfig(window_seconds=300, settle_seconds=60, catchup_windows=3)
    latest = runner.last_complete_windows(datetime(2024, 1, 1, 10, 16, tzinfo=UTC), config)
    assert [(w.start.minute, w.end.minute) for w in latest] == [(0, 5), (5, 10), (10, 15)]
    early = runner.last_complete_windows(datetime(2024, 1, 1, 10, 15, 30, tzinfo=UTC), config)
    assert early[-1].end.minute == 10  # 10:15 ended only 30 s ago: not settled yet


def test_the_alert_page_shows_a_market_alert_with_its_history(quiet_market, admin_client):
    last = Trade.objects.filter(market=quiet_market).order_by("-sequence")[0].price
    spike = trade_at(quiet_market, (last * D("1.05")).quantize(D("0.01")), "30", T0)
    findings = unusual_activity.detect(
        market=quiet_market, window=Window(T0, T0 + MINUTE), config=minute_config()
    )
    raised = runner.alerts_raise(findings)
    assert sorted(a.kind for a in raised) == [AlertKind.PRICE_MOVE, AlertKind.UNUSUAL_VOLUME]

    for alert in raised:
        html = admin_client.get(
            reverse("admin:compliance_surveillancealert_change", args=[alert.pk])
        ).content.decode()
        assert "Previous windows" in html
        assert reverse("admin:exchange_trade_change", args=[spike.pk]) in html
        assert "activity_lookback_windows" in html


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"WINDOW_SECONDS": 0}, "must be positive"),
        ({"SPOOF_SIZE_MULTIPLE": "ten"}, "is not a number"),
        ({"BURST_MIN_ORDERS": -1}, "≥ 0"),
        ({"VOLUME_STDEVS": "NaN"}, "finite"),
        ({"WASH_MIN_TRADE": 2}, "unknown setting"),
    ],
)
def test_a_bad_surveillance_setting_is_refused_by_name(settings, values, message):
    settings.SURVEILLANCE = values
    with pytest.raises(ImproperlyConfigured, match=message):
        SurveillanceConfig.from_settings()


def test_the_settings_override_the_defaults(settings):
    settings.SURVEILLANCE = {"WINDOW_SECONDS": 60, "VOLUME_STDEVS": "3.5"}
    config = SurveillanceConfig.from_settings()
    assert config.window_seconds == 60
    assert config.volume_stdevs == D("3.5")
    assert config.burst_min_orders == SurveillanceConfig().burst_min_orders
