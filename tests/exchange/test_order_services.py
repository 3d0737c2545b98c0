"""Accepting orders: a valid order is written with its hold and its command in one
transaction that wakes the matcher; a bad one gets a clear code and changes nothing."""

import select
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from exchange.matcher.market import MarketMatcher
from exchange.models import (
    MATCHER_CHANNEL,
    AccountStatus,
    CommandKind,
    MarketStatus,
    Order,
    OrderCommand,
    OrderStatus,
)
from exchange.services.orders import (
    OrderRejected,
    order_amend,
    order_cancel,
    order_cancel_all,
    order_place,
)
from portfolio.models import Balance, LedgerTransaction
from portfolio.reconciliation import ledger_check
from tests.factories import AccountFactory, order_request, place_order
from tests.portfolio import sim

D = Decimal


def held(account, asset) -> Decimal:
    row = Balance.objects.filter(account=account, asset=asset).first()
    return row.held if row else D(0)


@pytest.fixture
def nothing_written():
    """Assert the test leaves no order, command or ledger transaction behind."""
    before = Order.objects.count(), OrderCommand.objects.count(), LedgerTransaction.objects.count()
    yield
    after = Order.objects.count(), OrderCommand.objects.count(), LedgerTransaction.objects.count()
    assert after == before


@pytest.mark.django_db
def test_an_accepted_order_is_pending_with_its_hold_and_its_command(market, buyer):
    order = order_place(account=buyer, market=market, request=order_request())
    assert order.status == OrderStatus.PENDING
    assert (order.maker_fee_rate, order.taker_fee_rate) == (D("0.0002"), D("0.0005"))
    assert held(buyer, market.quote) == D("200.1")
    command = OrderCommand.objects.get(order=order)
    assert (command.kind, command.status) == (CommandKind.PLACE, "PENDING")
    assert ledger_check() == []


@pytest.mark.django_db
def test_the_same_client_order_id_returns_the_original_order(market, buyer):
    first = order_place(account=buyer, market=market, request=order_request(client_order_id="c-1"))
    again = order_place(account=buyer, market=market, request=order_request(client_order_id="c-1"))
    assert again.pk == first.pk
    assert OrderCommand.objects.filter(order=first).count() == 1
    assert held(buyer, market.quote) == D("200.1")


@pytest.mark.django_db
def test_a_reused_nonce_is_refused(market, buyer):
    order_place(account=buyer, market=market, request=order_request(nonce=77))
    with pytest.raises(OrderRejected) as refused:
        order_place(account=buyer, market=market, request=order_request(nonce=77))
    assert refused.value.code == "NONCE_REUSED"
    assert Order.objects.count() == OrderCommand.objects.count() == 1


@pytest.mark.django_db
def test_an_order_the_trader_cannot_fund_writes_nothing(market, buyer, nothing_written):
    with pytest.raises(OrderRejected) as refused:
        order_place(account=buyer, market=market, request=order_request(quantity=D("1000")))
    assert refused.value.code == "INSUFFICIENT_FUNDS"
    assert held(buyer, market.quote) == 0


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"side": "HOLD"}, "INVALID_SIDE"),
        ({"type": "TRAILING_STOP"}, "INVALID_ORDER_TYPE"),
        ({"price": None}, "MISSING_PRICE"),
        ({"type": "MARKET", "time_in_force": "IOC"}, "MARKET_ORDER_WITH_PRICE"),
        ({"type": "STOP_LIMIT"}, "MISSING_STOP_PRICE"),
        ({"stop_price": D("90")}, "STOP_PRICE_NOT_ALLOWED"),
        ({"price": D("100.005")}, "PRICE_OFF_TICK"),
        ({"price": D("-1")}, "INVALID_PRICE"),
        ({"quantity": D("1.0005")}, "QUANTITY_OFF_LOT"),
        ({"quantity": D("0")}, "INVALID_QUANTITY"),
        ({"quantity": None}, "INVALID_QUANTITY"),
        ({"price": D("0.01"), "quantity": D("1")}, "BELOW_MIN_NOTIONAL"),
        ({"time_in_force": "GTT"}, "MISSING_EXPIRE_TIME"),
        ({"expires_at": timezone.now() + timedelta(hours=1)}, "EXPIRE_TIME_NOT_ALLOWED"),
        (
            {"time_in_force": "GTT", "expires_at": timezone.now() - timedelta(seconds=1)},
            "ALREADY_EXPIRED",
        ),
        ({"post_only": True, "time_in_force": "IOC"}, "POST_ONLY_NOT_ALLOWED"),
        ({"display_quantity": D("3")}, "INVALID_DISPLAY_QUANTITY"),
        ({"quote_quantity": D("50")}, "QUOTE_AMOUNT_NOT_ALLOWED"),
        ({"type": "MARKET", "price": None}, "PROTECTION_PRICE_REQUIRED"),
        ({"protection_price": D("120")}, "PROTECTION_PRICE_NOT_ALLOWED"),
        (
            {"type": "MARKET", "price": None, "time_in_force": "GTC", "protection_price": D("120")},
            "INVALID_TIME_IN_FORCE",
        ),
        # Market types take what the book has, IOC; fill-or-kill is for limits.
        (
            {"type": "MARKET", "price": None, "time_in_force": "FOK", "protection_price": D("120")},
            "INVALID_TIME_IN_FORCE",
        ),
        (
            {
                "type": "MARKET",
                "price": None,
                "quantity": None,
                "quote_quantity": D("150"),
                "time_in_force": "FOK",
            },
            "INVALID_TIME_IN_FORCE",
        ),
        (
            {
                "side": "SELL",
                "type": "STOP_MARKET",
                "price": None,
                "stop_price": D("90"),
                "time_in_force": "FOK",
            },
            "INVALID_TIME_IN_FORCE",
        ),
        (
            {"type": "STOP_LIMIT", "stop_price": D("101"), "post_only": True},
            "POST_ONLY_NOT_ALLOWED",
        ),
        (
            {"type": "TAKE_PROFIT_LIMIT", "stop_price": D("99"), "post_only": True},
            "POST_ONLY_NOT_ALLOWED",
        ),
        ({"self_trade_prevention": "ALLOW"}, "INVALID_STP_MODE"),
    ],
)
@pytest.mark.django_db
def test_a_bad_order_gets_a_clear_code_and_changes_nothing(
    market, buyer, nothing_written, fields, code
):
    with pytest.raises(OrderRejected) as refused:
        order_place(account=buyer, market=market, request=order_request(**fields))
    assert refused.value.code == code
    assert str(refused.value)


@pytest.mark.parametrize(
    ("status", "code"),
    [(MarketStatus.HALTED, "MARKET_HALTED"), (MarketStatus.CLOSED, "MARKET_NOT_OPEN")],
)
@pytest.mark.django_db
def test_orders_are_refused_in_a_market_that_is_not_trading(
    market, buyer, nothing_written, status, code
):
    market.status = status
    market.save(update_fields=["status"])
    with pytest.raises(OrderRejected) as refused:
        order_place(account=buyer, market=market, request=order_request())
    assert refused.value.code == code


@pytest.mark.django_db
def test_a_frozen_account_cannot_place_orders(market, buyer, nothing_written):
    buyer.status = AccountStatus.FROZEN
    buyer.save(update_fields=["status"])
    with pytest.raises(OrderRejected) as refused:
        order_place(account=buyer, market=market, request=order_request())
    assert refused.value.code == "ACCOUNT_FROZEN"


@pytest.mark.django_db
def test_market_orders_hold_by_quote_amount_or_protection_price(market, buyer):
    by_quote = order_place(
        account=buyer,
        market=market,
        request=order_request(type="MARKET", price=None, quantity=None, quote_quantity=D("150")),
    )
    by_quantity = order_place(
        account=buyer,
        market=market,
        request=order_request(
            type="MARKET", price=None, quantity=D("1"), protection_price=D("105")
        ),
    )
    assert by_quote.time_in_force == by_quantity.time_in_force == "IOC"
    assert held(buyer, market.quote) == D("150") + D("105.0525")


@pytest.mark.django_db
def test_cancel_amend_and_cancel_all_go_to_the_matcher(market, buyer):
    order = sim.place(buyer, market, "BUY", "2", "100")  # resting
    cancel = order_cancel(account=buyer, order=order)
    amend = order_amend(account=buyer, order=order, price=D("99.5"))
    everything = order_cancel_all(account=buyer, market=market)
    assert [c.kind for c in (cancel, amend, everything)] == ["CANCEL", "AMEND", "CANCEL_ALL"]
    assert amend.payload == {"price": "99.5"}


@pytest.mark.django_db
def test_nobody_can_touch_another_traders_order(market, buyer):
    order = sim.place(buyer, market, "BUY", "2", "100")
    stranger = AccountFactory()
    with pytest.raises(OrderRejected) as refused:
        order_cancel(account=stranger, order=order)
    assert refused.value.code == "UNKNOWN_ORDER"
    with pytest.raises(OrderRejected) as refused:
        order_amend(account=stranger, order=order, price=D(1))
    assert refused.value.code == "UNKNOWN_ORDER"
    assert not OrderCommand.objects.exists()


@pytest.mark.django_db
def test_finished_orders_cannot_be_cancelled_or_amended(market, buyer):
    order = sim.place(buyer, market, "BUY", "2", "100")
    sim.cancel(order)
    with pytest.raises(OrderRejected) as refused:
        order_cancel(account=buyer, order=order)
    assert refused.value.code == "ORDER_CLOSED"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "code"),
    [
        # An iceberg amended below its visible part: a row the database would refuse.
        ({"quantity": D("2")}, "INVALID_DISPLAY_QUANTITY"),
        ({"price": D("0.01"), "quantity": D("6")}, "BELOW_MIN_NOTIONAL"),
        ({"quantity": D("6.0001")}, "QUANTITY_OFF_LOT"),
        # Beyond what a hold can be computed and stored in: no money, no matter.
        ({"price": D("99999999999.99"), "quantity": D("999999999999")}, "TOO_LARGE"),
        ({"quantity": D("2") * 10**15}, "TOO_LARGE"),
        # Larger than the trader's KYC tier allows one order to be (1,000 USDC).
        ({"quantity": D("50")}, "KYC_LIMIT_EXCEEDED"),
    ],
)
def test_an_amended_order_passes_every_check_a_new_one_would(market, buyer, change, code):
    from compliance.models import KycTierLimit

    KycTierLimit.objects.create(kyc_tier=1, quote=market.quote, max_order_notional=D("1000"))
    order = place_order(buyer, market, "BUY", "6", "100", display_quantity=D("5"))
    MarketMatcher(market).run_batch()  # resting
    before = OrderCommand.objects.count()
    with pytest.raises(OrderRejected) as refused:
        order_amend(account=buyer, order=order, **change)
    assert refused.value.code == code
    assert OrderCommand.objects.count() == before


@pytest.mark.django_db
def test_a_stop_that_has_not_fired_cannot_be_amended(market, buyer):
    order = place_order(buyer, market, "BUY", "1", "99", type="STOP_LIMIT", stop_price=D("101"))
    MarketMatcher(market).run_batch()
    order.refresh_from_db()
    assert order.status == OrderStatus.UNTRIGGERED
    with pytest.raises(OrderRejected) as refused:
        order_amend(account=buyer, order=order, price=D("98"))
    assert refused.value.code == "NOT_AMENDABLE"
    assert not OrderCommand.objects.filter(kind=CommandKind.AMEND).exists()


@pytest.mark.django_db
def test_an_amend_is_refused_once_the_account_is_frozen_or_the_market_halted(market, buyer):
    order = sim.place(buyer, market, "BUY", "2", "100")
    buyer.status = AccountStatus.FROZEN
    buyer.save(update_fields=["status"])
    with pytest.raises(OrderRejected) as refused:
        order_amend(account=buyer, order=order, price=D("99"))
    assert refused.value.code == "ACCOUNT_FROZEN"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields",
    [
        {"price": D("999999999999.99"), "quantity": D("1000000000000000")},
        {"price": D("100"), "quantity": D("100000000000000")},  # worth 10^16
        {"type": "MARKET", "quote_quantity": D(10) ** 21, "price": None, "quantity": None},
    ],
)
def test_an_order_too_large_to_hold_is_refused_not_failed(market, buyer, fields, nothing_written):
    with pytest.raises(OrderRejected) as refused:
        order_place(account=buyer, market=market, request=order_request(**fields))
    assert refused.value.code == "TOO_LARGE"


def _listen():
    settings = connection.settings_dict
    listener = psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"] or settings["OPTIONS"].get("host"),
        port=settings["PORT"] or None,
        autocommit=True,
    )
    listener.execute(f"LISTEN {MATCHER_CHANNEL}")
    return listener


def _notifications(listener, timeout: float) -> list[str]:
    payloads = []
    if select.select([listener.fileno()], [], [], timeout)[0]:
        payloads += [n.payload for n in listener.notifies(timeout=0.2, stop_after=100)]
    return payloads


@pytest.mark.django_db(transaction=True)
def test_the_matcher_is_woken_when_the_order_commits_and_only_then(market, buyer):
    with _listen() as listener:
        order_place(account=buyer, market=market, request=order_request())
        assert _notifications(listener, timeout=5) == [str(market.pk)]
        with pytest.raises(OrderRejected):
            order_place(account=buyer, market=market, request=order_request(quantity=D("1000")))
        assert _notifications(listener, timeout=0.5) == []
