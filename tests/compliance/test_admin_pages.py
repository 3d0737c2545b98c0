"""The back office's control pages and overviews in the admin: a control asks for its
reason on a confirmation page and does nothing until confirmed; each needs its
permission; the account's 360° page and the venue overview show the real numbers."""

import datetime as dt
import uuid
from decimal import Decimal
from urllib.parse import urlencode

import psycopg
import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from compliance.models import (
    AccountFreeze,
    AlertKind,
    AlertSeverity,
    AlertStatus,
    AuditEvent,
    KycCase,
    KycStatus,
    SurveillanceAlert,
)
from compliance.selectors import celery_queue_name
from compliance.services.accounts import account_freeze
from compliance.services.audit import Actor
from dex.redis import redis_client
from exchange.matcher.market import MarketMatcher
from exchange.matcher.runner import LOCK_NAMESPACE
from exchange.models import (
    AccountStatus,
    CommandKind,
    CommandStatus,
    Market,
    MarketStatus,
    Order,
    OrderCommand,
    WebSocketConnection,
)
from portfolio.services.vault import withdrawal_request
from tests.factories import AccountFactory, AssetFactory, MarketFactory, place_order
from tests.live import database_url, wait_for
from tests.portfolio import sim

D = Decimal
pytestmark = pytest.mark.django_db


def staff_user(django_user_model, username: str, *perms: str):
    user = django_user_model.objects.create_user(username, is_staff=True, password="x")
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


@pytest.fixture
def officer(client, django_user_model):
    """A compliance officer: sees accounts, orders, trades, markets, balances, KYC cases,
    alerts, freezes and the audit trail; may freeze, close, cancel orders, control
    markets and see the venue."""
    user = staff_user(
        django_user_model,
        "officer",
        "exchange.view_account",
        "exchange.view_order",
        "exchange.view_trade",
        "exchange.view_market",
        "portfolio.view_balance",
        "compliance.view_kyccase",
        "compliance.view_surveillancealert",
        "compliance.view_accountfreeze",
        "compliance.view_auditevent",
        "compliance.freeze_account",
        "compliance.close_account",
        "compliance.cancel_orders",
        "compliance.control_market",
        "compliance.view_venue",
    )
    client.force_login(user)
    return user


@pytest.fixture
def viewer(client, django_user_model):
    """Staff who may look at accounts, orders and markets, and nothing more."""
    user = staff_user(
        django_user_model,
        "viewer",
        "exchange.view_account",
        "exchange.view_order",
        "exchange.view_market",
    )
    client.force_login(user)
    return user


def control_url(model: str, name: str, *objects) -> str:
    url = reverse(f"admin:exchange_{model}_control", args=[name])
    return f"{url}?{urlencode({'ids': ','.join(str(o.pk) for o in objects)})}"


def status_of(account) -> str:
    account.refresh_from_db()
    return account.status


# --- the confirmation flow ---------------------------------------------------------------


def test_a_bulk_freeze_asks_for_a_reason_and_does_nothing_until_confirmed(client, officer, market):
    first, second = AccountFactory(label="alpha"), AccountFactory(label="beta")
    sim.deposit(first, market.quote, "100")
    place_order(first, market, "BUY", "0.5", "99")

    response = client.post(
        reverse("admin:exchange_account_changelist"),
        {"action": "freeze_selected", "_selected_action": [first.pk, second.pk]},
    )
    assert response.status_code == 302
    confirm = response.url
    assert confirm.startswith(reverse("admin:exchange_account_control", args=["freeze"]))

    page = client.get(confirm)
    assert page.status_code == 200
    html = page.content.decode()
    assert "alpha" in html
    assert "beta" in html
    assert "Yes, freeze" in html
    assert "can no longer place orders or withdraw" in html
    assert [status_of(first), status_of(second)] == ["ACTIVE", "ACTIVE"]

    refused = client.post(confirm, {"reason": "   "})
    assert refused.status_code == 400
    assert "This field is required." in refused.content.decode()
    assert [status_of(first), status_of(second)] == ["ACTIVE", "ACTIVE"]
    assert not AuditEvent.objects.exists()
    assert not OrderCommand.objects.filter(kind=CommandKind.CANCEL_ALL).exists()

    done = client.post(confirm, {"reason": "linked to fraud ring"}, follow=True)
    assert done.redirect_chain == [(reverse("admin:exchange_account_changelist"), 302)]
    assert "Frozen 2 accounts: alpha, beta" in done.content.decode()
    assert [status_of(first), status_of(second)] == ["FROZEN", "FROZEN"]
    assert (
        list(AccountFreeze.objects.values_list("reason", flat=True)) == ["linked to fraud ring"] * 2
    )
    assert OrderCommand.objects.filter(kind=CommandKind.CANCEL_ALL, account=first).count() == 1
    events = AuditEvent.objects.filter(action="account.freeze")
    assert sorted(e.target_id for e in events) == sorted([str(first.pk), str(second.pk)])
    assert {e.actor_label for e in events} == {"officer"}


def test_a_bulk_control_reports_each_refusal_and_does_the_rest(client, officer):
    frozen, active = AccountFactory(label="frozen-one"), AccountFactory(label="active-one")
    account_freeze(actor=Actor(user=officer), account=frozen, reason="earlier")

    done = client.post(
        control_url("account", "unfreeze", frozen, active), {"reason": "cleared"}, follow=True
    )
    html = done.content.decode()
    assert "Unfrozen 1 account: frozen-one" in html
    assert "Unfreeze refused for active-one: active-one is ACTIVE, not frozen" in html
    assert [status_of(frozen), status_of(active)] == ["ACTIVE", "ACTIVE"]


def test_closing_an_account_with_funds_is_refused_on_the_page(client, officer, buyer):
    done = client.post(control_url("account", "close", buyer), {"reason": "offboard"}, follow=True)
    assert done.redirect_chain == [(reverse("admin:exchange_account_change", args=[buyer.pk]), 302)]
    assert "still holds 10000 USDC" in done.content.decode()
    assert status_of(buyer) == AccountStatus.ACTIVE


def test_a_force_cancel_from_the_order_list(client, officer, market, buyer):
    order = place_order(buyer, market, "BUY", "1", "99")
    MarketMatcher(market).run_batch()

    response = client.post(
        reverse("admin:exchange_order_changelist"),
        {"action": "force_cancel_selected", "_selected_action": [order.pk]},
    )
    assert client.get(response.url).status_code == 200
    client.post(response.url, {"reason": "fat finger"})

    command = OrderCommand.objects.get(kind=CommandKind.CANCEL)
    assert (command.order_id, command.status) == (order.pk, CommandStatus.PENDING)
    assert AuditEvent.objects.get().action == "order.force_cancel"
    page = client.get(reverse("admin:exchange_order_change", args=[order.pk]))
    assert control_url("order", "force_cancel", order) in page.content.decode()


def test_a_halt_from_the_market_page_waits_for_the_matcher(client, officer, market):
    page = client.get(reverse("admin:exchange_market_change", args=[market.pk]))
    assert control_url("market", "halt", market) in page.content.decode()

    client.post(control_url("market", "halt", market), {"reason": "exploit reported"})
    assert OrderCommand.objects.get().kind == CommandKind.HALT
    market.refresh_from_db()
    assert market.status == MarketStatus.OPEN
    MarketMatcher(market).run_batch()
    market.refresh_from_db()
    assert market.status == MarketStatus.HALTED


def test_the_rules_form_shows_the_rules_and_sends_a_change_to_the_matcher(client, officer, market):
    url = reverse("admin:exchange_market_rules", args=[market.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert page.context["form"].initial["taker_fee_rate"] == D("0.0005")

    fields = {
        "maker_fee_rate": "0.0002",
        "taker_fee_rate": "0.0005",
        "min_quantity": "0.001",
        "min_notional": "1",
        "price_band": "0.05",
    }
    bad = client.post(url, fields | {"maker_fee_rate": "-0.001", "reason": "rebate promo"})
    assert bad.status_code == 400
    assert "a maker rebate may never exceed the taker fee" in bad.content.decode()
    off_lot = client.post(url, fields | {"min_quantity": "0.0015", "reason": "x"})
    assert off_lot.status_code == 400
    assert not OrderCommand.objects.exists()

    done = client.post(url, fields | {"taker_fee_rate": "0.0007", "reason": "new schedule"})
    assert done.status_code == 302
    command = OrderCommand.objects.get()
    assert (command.kind, command.payload["taker_fee_rate"]) == ("SET_RULES", "0.0007")
    assert AuditEvent.objects.get().reason == "new schedule"


def test_a_listed_markets_fees_and_limits_are_not_edited_on_its_form(client, market, admin_user):
    client.force_login(admin_user)
    page = client.get(reverse("admin:exchange_market_change", args=[market.pk]))
    html = page.content.decode()
    for name in ("maker_fee_rate", "taker_fee_rate", "min_quantity", "price_band", "tick_size"):
        assert f'name="{name}"' not in html
    assert reverse("admin:exchange_market_rules", args=[market.pk]) in html


# --- permissions -------------------------------------------------------------------------


def test_staff_without_the_permissions_can_take_no_control(client, viewer, market, buyer):
    order = place_order(buyer, market, "BUY", "1", "99")
    changelist = client.get(reverse("admin:exchange_account_changelist"))
    form = changelist.context["action_form"]
    actions = [name for name, _ in form.fields["action"].choices] if form else []
    assert not [a for a in actions if a.endswith("_selected")]

    for url in (
        control_url("account", "freeze", buyer),
        control_url("account", "close", buyer),
        control_url("account", "cancel_orders", buyer),
        control_url("order", "force_cancel", order),
        control_url("market", "halt", market),
        control_url("market", "cancel_orders", market),
        reverse("admin:exchange_market_rules", args=[market.pk]),
        reverse("admin:exchange_account_360", args=[buyer.pk]),
        reverse("admin:compliance_venue_overview"),
    ):
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"reason": "try"}).status_code == 403, url
    # The action itself is refused, too, when posted by hand.
    client.post(
        reverse("admin:exchange_account_changelist"),
        {"action": "freeze_selected", "_selected_action": [buyer.pk]},
    )
    assert status_of(buyer) == AccountStatus.ACTIVE
    assert list(OrderCommand.objects.values_list("kind", flat=True)) == ["PLACE"]
    assert not AuditEvent.objects.exists()


def test_one_permission_does_not_grant_another(client, django_user_model, market, trader):
    freezer = staff_user(
        django_user_model, "freezer", "exchange.view_account", "compliance.freeze_account"
    )
    client.force_login(freezer)
    assert client.get(control_url("account", "freeze", trader)).status_code == 200
    assert client.get(control_url("account", "close", trader)).status_code == 403
    assert client.get(control_url("market", "halt", market)).status_code == 403


# --- the account's 360° page ---------------------------------------------------------------


def test_the_360_page_shows_everything_known_of_the_account(
    client, officer, market, buyer, seller, other_staff
):
    matcher = MarketMatcher(market)
    place_order(seller, market, "SELL", "1", "100")
    place_order(buyer, market, "BUY", "1.5", "100")  # 1 trades, 0.5 rests
    place_order(buyer, market, "BUY", "2", "95")
    matcher.run_batch()
    case = KycCase.objects.create(account=buyer, requested_tier=2, country="GB")
    now = timezone.now()
    SurveillanceAlert.objects.create(
        kind=AlertKind.SPOOFING,
        severity=AlertSeverity.HIGH,
        market=market,
        account=buyer,
        summary="layering on the bid",
        window_start=now - dt.timedelta(minutes=5),
        window_end=now,
        dedupe_key=f"spoofing:{buyer.pk}",
    )
    account_freeze(actor=Actor(user=other_staff), account=buyer, reason="layering review")
    matcher.run_batch()  # the freeze's cancels

    url = reverse("admin:exchange_account_360", args=[buyer.pk])
    page = client.get(url)
    assert page.status_code == 200
    picture = page.context["picture"]
    assert [c.pk for c in picture.kyc_cases] == [case.pk]
    balances = {b.asset.symbol: (b.available, b.held) for b in picture.balances}
    # 100 + 0.05 fee paid for 1 ETH; the resting bids were cancelled by the freeze.
    assert balances == {"ETH": (D(1), D(0)), "USDC": (D("9899.95"), D(0))}
    assert (picture.open_order_count, picture.open_orders) == (0, [])
    assert [(t.price, t.quantity, t.buyer_id) for t in picture.recent_trades] == [
        (D(100), D(1), buyer.pk)
    ]
    assert [(a.summary, a.status) for a in picture.alerts] == [("layering on the bid", "OPEN")]
    assert picture.open_alert_count == 1
    assert picture.freeze_in_force.reason == "layering review"
    assert [e.action for e in picture.audit_events] == ["account.freeze"]

    html = page.content.decode()
    assert '<td id="account-status">FROZEN</td>' in html
    assert "9899.95" in html
    assert "layering on the bid" in html
    assert "ops-2" in html
    assert reverse("admin:exchange_account_portfolio", args=[buyer.pk]) in html
    change = client.get(reverse("admin:exchange_account_change", args=[buyer.pk]))
    assert url in change.content.decode()
    listing = client.get(reverse("admin:exchange_account_changelist"))
    assert url in listing.content.decode()


def test_the_360_page_lists_open_orders_and_force_cancels(client, officer, market, buyer):
    bid = place_order(buyer, market, "BUY", "1", "99")
    place_order(buyer, market, "BUY", "1", "98")
    MarketMatcher(market).run_batch()
    client.post(control_url("order", "force_cancel", bid), {"reason": "stale quote"})

    picture = client.get(reverse("admin:exchange_account_360", args=[buyer.pk])).context["picture"]
    assert picture.open_order_count == 2  # the cancel waits for the matcher
    assert [e.action for e in picture.audit_events] == ["order.force_cancel"]


# --- the venue overview ------------------------------------------------------------------


@pytest.fixture
def celery_queue():
    client = redis_client()
    client.delete(celery_queue_name())
    yield client
    client.delete(celery_queue_name())


def test_the_venue_overview_shows_markets_queues_and_moving_parts(
    client, officer, market, buyer, seller, celery_queue
):
    quiet = MarketFactory(base=AssetFactory(symbol="SOL"), quote=market.quote)
    matcher = MarketMatcher(market)
    place_order(seller, market, "SELL", "1", "100")
    place_order(seller, market, "SELL", "1", "101")
    place_order(buyer, market, "BUY", "1.5", "101")  # 1 at 100 and 0.5 at 101
    place_order(buyer, market, "BUY", "1", "99")
    place_order(buyer, market, "BUY", "1", "98")
    matcher.run_batch()
    waiting = place_order(buyer, market, "BUY", "1", "97")  # waits for the matcher

    now = timezone.now()
    for kind, key in [
        (AlertKind.SPOOFING, "s1"),
        (AlertKind.SPOOFING, "s2"),
        (AlertKind.WASH_TRADING, "w1"),
        (AlertKind.WASH_TRADING, "w2"),
    ]:
        SurveillanceAlert.objects.create(
            kind=kind,
            severity=AlertSeverity.MEDIUM,
            summary=key,
            window_start=now,
            window_end=now,
            dedupe_key=key,
        )
    SurveillanceAlert.objects.filter(dedupe_key="w2").update(
        status=AlertStatus.FALSE_POSITIVE, closed_at=now
    )
    for account in AccountFactory.create_batch(2):
        KycCase.objects.create(account=account, requested_tier=1, country="GB")
    asked = KycCase.objects.create(account=AccountFactory(), requested_tier=2, country="FR")
    KycCase.objects.filter(pk=asked.pk).update(status=KycStatus.IN_REVIEW)
    KycCase.objects.filter(pk=asked.pk).update(status=KycStatus.MORE_INFO)
    for key in ("w-1", "w-2"):
        withdrawal_request(
            account=seller,
            asset=market.base,
            amount=D("2"),
            destination_address="0x" + "cd" * 20,
            idempotency_key=key,
        )
    for closed in (False, False, True):
        WebSocketConnection.objects.create(
            connection_id=uuid.uuid4(),
            connected_at=now,
            last_seen_at=now,
            disconnected_at=now if closed else None,
        )
    celery_queue.rpush(celery_queue_name(), "task-1", "task-2", "task-3")

    page = client.get(reverse("admin:compliance_venue_overview"))
    assert page.status_code == 200
    venue = page.context["venue"]
    eth, sol = venue.markets
    assert (eth.market, sol.market) == (market, quiet)
    assert (eth.last_price, eth.volume_24h, eth.quote_volume_24h, eth.trades_24h) == (
        D(101),
        D("1.5"),
        D("150.5"),
        2,
    )
    assert (eth.open_orders, eth.best_bid, eth.best_ask) == (3, D(99), D(101))
    assert (sol.last_price, sol.trades_24h, sol.open_orders, sol.best_bid) == (None, 0, 0, None)
    assert eth.matcher.pending == 1
    assert eth.matcher.last_sequence == 5
    assert eth.matcher.oldest_pending_at == OrderCommand.objects.get(order=waiting).created_at
    assert eth.matcher.oldest_pending_age == venue.now - eth.matcher.oldest_pending_at
    assert (eth.matcher.owned, eth.matcher.state) == (False, "no matcher, commands waiting")
    assert (sol.matcher.pending, sol.matcher.state) == (0, "no matcher")
    assert venue.open_alerts_by_kind == [("spoofing / layering", 2), ("Wash Trading", 1)]
    assert venue.open_alerts == 3
    assert venue.kyc_awaiting_review == 2
    assert dict(venue.kyc_queue)["more info requested"] == 1
    assert venue.pending_withdrawals == 2
    assert venue.pending_withdrawals_by_asset == [("ETH", D(4), 2)]
    assert venue.celery_queue_depth == 3
    assert venue.websocket_connections_open == 2

    html = page.content.decode()
    assert '<td class="num open-orders">3</td>' in html
    assert '<td class="num" id="celery-queue-depth">3</td>' in html
    assert '<td class="num" id="websocket-connections">2</td>' in html
    assert '<td class="num" id="pending-withdrawals">2</td>' in html


def test_the_venue_overview_names_the_session_holding_a_markets_lock(client, officer, market):
    with psycopg.connect(database_url(), autocommit=True) as session:
        session.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, market.pk])
        pid = session.info.backend_pid
        venue = client.get(reverse("admin:compliance_venue_overview")).context["venue"]
    (row,) = venue.markets
    assert (row.matcher.lock_pid, row.matcher.owned, row.matcher.state) == (pid, True, "ok")


@pytest.mark.django_db(transaction=True)
def test_the_venue_overview_sees_a_running_matcher(client, officer, market, buyer, matchers):
    proc = matchers.start()
    place_order(buyer, market, "BUY", "1", "99")

    def heartbeat():
        venue = client.get(reverse("admin:compliance_venue_overview")).context["venue"]
        health = venue.markets[0].matcher
        return health if health.heartbeat and not health.pending else None

    health = wait_for(heartbeat, 30, "the matcher's heartbeat", matchers)
    assert health.owned
    assert health.heartbeat["owner"].endswith(f":{proc.pid}")
    assert (health.last_sequence, health.state) == (1, "ok")
    assert Order.objects.get().status == "OPEN"
    assert Market.objects.get().status == MarketStatus.OPEN


def test_the_admin_index_links_to_the_venue_overview(client, officer):
    page = client.get(reverse("admin:index"))
    assert reverse("admin:compliance_venue_overview") in page.content.decode()
