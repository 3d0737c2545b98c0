"""Every rule of the core schema is PostgreSQL's, not only Python's.

Each test bypasses the services — raw SQL, ``QuerySet.update`` or a bare INSERT — and
checks that PostgreSQL refuses the row, naming the rule it broke.
"""

from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone

from exchange.models import (
    TERMINAL_STATUSES,
    Account,
    ApiKey,
    CommandStatus,
    Market,
    MarketStatus,
    Order,
    OrderCommand,
    OrderStatus,
    OrderStatusHistory,
    OrderType,
    SettlementStatus,
    Side,
    TimeInForce,
    Trade,
)
from tests.factories import (
    AccountFactory,
    MarketFactory,
    OrderCommandFactory,
    OrderFactory,
    random_hex,
)
from tests.sql import refused, sql

pytestmark = pytest.mark.django_db

INVALID_TRANSITION = "Invalid transition"
FINISHED = "Cannot update (order|command) .*read-only"


# --- reaching each status the legitimate way, with raw SQL ------------------------------

ACCEPT = "status = %s, sequence = {seq}, accepted_at = now()"
STEPS = {
    OrderStatus.OPEN: [("OPEN", ACCEPT)],
    OrderStatus.UNTRIGGERED: [("UNTRIGGERED", ACCEPT)],
    OrderStatus.REJECTED: [
        ("REJECTED", "status = %s, done_at = now(), reason = 'POST_ONLY_WOULD_TAKE'")
    ],
    OrderStatus.PARTIALLY_FILLED: [
        ("OPEN", ACCEPT),
        (
            "PARTIALLY_FILLED",
            "status = %s, filled = 0.4, remaining = 0.6, filled_quote = 40, average_price = 100",
        ),
    ],
    OrderStatus.FILLED: [
        ("OPEN", ACCEPT),
        (
            "FILLED",
            "status = %s, filled = 1, remaining = 0, filled_quote = 100, average_price = 100,"
            " done_at = now()",
        ),
    ],
    OrderStatus.CANCELLED: [
        ("OPEN", ACCEPT),
        ("CANCELLED", "status = %s, done_at = now(), reason = 'USER_CANCEL'"),
    ],
    OrderStatus.EXPIRED: [
        ("OPEN", ACCEPT),
        ("EXPIRED", "status = %s, done_at = now(), reason = 'GTT_EXPIRED'"),
    ],
}


def advance(order: Order, status: str) -> Order:
    for step_status, assignments in STEPS.get(status, []):
        sql(
            f"UPDATE exchange_order SET {assignments.format(seq=order.pk)} WHERE id = %s",
            [step_status, order.pk],
        )
    order.refresh_from_db()
    assert order.status == status
    return order


# --- orders: sizes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "rule"),
    [
        (Decimal(0), "order_quantity_positive"),
        # A negative size breaks two rules; PostgreSQL names the first it checks.
        (Decimal("-1"), "order_filled_within_quantity|order_quantity_positive"),
    ],
)
def test_order_quantity_must_be_positive(quantity, rule):
    with refused(rule):
        OrderFactory(quantity=quantity, remaining=quantity)
    order = OrderFactory()
    with refused(rule):
        Order.objects.filter(pk=order.pk).update(quantity=quantity, remaining=quantity)


def test_order_cannot_fill_beyond_its_quantity():
    order = advance(OrderFactory(quantity=Decimal(1)), OrderStatus.OPEN)
    with refused("order_filled_within_quantity"):
        sql(
            "UPDATE exchange_order SET status = 'CANCELLED', done_at = now(), filled = 1.5,"
            " remaining = -0.5, filled_quote = 150, average_price = 100 WHERE id = %s",
            [order.pk],
        )


def test_order_remaining_is_always_quantity_minus_filled():
    order = OrderFactory(quantity=Decimal(2))
    with refused("order_remaining_is_quantity_minus_filled"):
        Order.objects.filter(pk=order.pk).update(remaining=F("remaining") - 1)
    with refused("order_remaining_is_quantity_minus_filled"):
        sql("UPDATE exchange_order SET remaining = NULL WHERE id = %s", [order.pk])


def test_order_size_is_a_quantity_or_for_market_buys_a_quote_amount():
    with refused("order_quantity_or_quote_quantity"):
        OrderFactory(quantity=None, remaining=None)
    with refused("order_quantity_or_quote_quantity"):  # a limit order cannot spend quote
        OrderFactory(quantity=None, remaining=None, quote_quantity=Decimal(100))
    with refused("order_quantity_or_quote_quantity"):  # nor can a market sell
        OrderFactory(
            type=OrderType.MARKET,
            time_in_force=TimeInForce.IOC,
            side=Side.SELL,
            price=None,
            quantity=None,
            remaining=None,
            quote_quantity=Decimal(100),
        )
    market_buy = OrderFactory(
        type=OrderType.MARKET,
        time_in_force=TimeInForce.IOC,
        price=None,
        quantity=None,
        remaining=None,
        quote_quantity=Decimal(100),
    )
    assert market_buy.quantity is None


# --- orders: prices per type ---------------------------------------------------------


@pytest.mark.parametrize(
    ("order_type", "time_in_force", "price", "stop_price", "rule"),
    [
        (OrderType.LIMIT, TimeInForce.GTC, None, None, "order_price_iff_limit_type"),
        (OrderType.MARKET, TimeInForce.IOC, Decimal(100), None, "order_price_iff_limit_type"),
        (OrderType.STOP_LIMIT, TimeInForce.GTC, None, Decimal(90), "order_price_iff_limit_type"),
        (
            OrderType.STOP_MARKET,
            TimeInForce.IOC,
            Decimal(100),
            Decimal(90),
            "order_price_iff_limit_type",
        ),
        (OrderType.LIMIT, TimeInForce.GTC, Decimal(0), None, "order_price_iff_limit_type"),
        (OrderType.STOP_LIMIT, TimeInForce.GTC, Decimal(100), None, "order_stop_price_iff_stop"),
        (OrderType.STOP_MARKET, TimeInForce.IOC, None, None, "order_stop_price_iff_stop"),
        (OrderType.TAKE_PROFIT_LIMIT, TimeInForce.GTC, Decimal(100), None, "order_stop_price"),
        (OrderType.TAKE_PROFIT_MARKET, TimeInForce.IOC, None, None, "order_stop_price"),
        (OrderType.LIMIT, TimeInForce.GTC, Decimal(100), Decimal(90), "order_stop_price"),
        (OrderType.MARKET, TimeInForce.IOC, None, Decimal(90), "order_stop_price"),
    ],
)
def test_price_exactly_for_limit_types_and_stop_price_exactly_for_stop_types(
    order_type, time_in_force, price, stop_price, rule
):
    with refused(rule):  # sells, so market types need no protection price
        OrderFactory(
            side=Side.SELL,
            type=order_type,
            time_in_force=time_in_force,
            price=price,
            stop_price=stop_price,
        )


@pytest.mark.parametrize(
    ("order_type", "time_in_force", "price", "stop_price"),
    [
        (OrderType.LIMIT, TimeInForce.GTC, Decimal(100), None),
        (OrderType.MARKET, TimeInForce.IOC, None, None),
        (OrderType.STOP_LIMIT, TimeInForce.GTC, Decimal(100), Decimal(90)),
        (OrderType.STOP_MARKET, TimeInForce.IOC, None, Decimal(90)),
        (OrderType.TAKE_PROFIT_LIMIT, TimeInForce.GTC, Decimal(100), Decimal(110)),
        (OrderType.TAKE_PROFIT_MARKET, TimeInForce.IOC, None, Decimal(110)),
    ],
)
def test_every_order_type_is_accepted_with_the_prices_it_needs(
    order_type, time_in_force, price, stop_price
):
    for side in Side.values:
        order = OrderFactory(
            side=side,
            type=order_type,
            time_in_force=time_in_force,
            price=price,
            stop_price=stop_price,
            protection_price=Decimal(120) if side == Side.BUY and price is None else None,
        )
        assert Order.objects.filter(pk=order.pk, type=order_type, side=side).exists()


@pytest.mark.parametrize("order_type", [OrderType.MARKET, OrderType.STOP_MARKET])
def test_a_market_buy_by_quantity_names_its_worst_price(order_type):
    stop = Decimal(90) if order_type == OrderType.STOP_MARKET else None
    market_buy = {
        "type": order_type,
        "time_in_force": TimeInForce.IOC,
        "price": None,
        "stop_price": stop,
    }
    with refused("order_protection_price_for_market_buys"):
        OrderFactory(**market_buy)
    with refused("order_protection_price_for_market_buys"):  # a limit order has its price
        OrderFactory(protection_price=Decimal(120))
    with refused("not a multiple of the tick size"):
        OrderFactory(**market_buy, protection_price=Decimal("120.001"))
    assert OrderFactory(**market_buy, protection_price=Decimal(120)).protection_price == 120


def test_market_orders_never_rest():
    with refused("order_market_types_do_not_rest"):
        OrderFactory(type=OrderType.MARKET, time_in_force=TimeInForce.GTC, price=None)


@pytest.mark.parametrize(
    ("order_type", "stop_price"),
    [
        (OrderType.MARKET, None),
        (OrderType.STOP_MARKET, Decimal(90)),
        (OrderType.TAKE_PROFIT_MARKET, Decimal(110)),
    ],
)
def test_market_orders_are_immediate_or_cancel_never_fill_or_kill(order_type, stop_price):
    market_sell = {"side": Side.SELL, "type": order_type, "price": None, "stop_price": stop_price}
    with refused("order_market_types_do_not_rest"):
        OrderFactory(**market_sell, time_in_force=TimeInForce.FOK)
    assert OrderFactory(**market_sell, time_in_force=TimeInForce.IOC).pk
    if order_type == OrderType.MARKET:  # and a market buy, by quantity or by quote amount
        with refused("order_market_types_do_not_rest"):
            OrderFactory(
                type=order_type,
                time_in_force=TimeInForce.FOK,
                price=None,
                protection_price=Decimal(120),
            )
        with refused("order_market_types_do_not_rest"):
            OrderFactory(
                type=order_type,
                time_in_force=TimeInForce.FOK,
                price=None,
                quantity=None,
                remaining=None,
                quote_quantity=Decimal(100),
            )


def test_gtt_orders_and_only_they_carry_an_expiry():
    with refused("order_expiry_iff_gtt"):
        OrderFactory(time_in_force=TimeInForce.GTT, expires_at=None)
    with refused("order_expiry_iff_gtt"):
        OrderFactory(time_in_force=TimeInForce.GTC, expires_at=timezone.now())


def test_post_only_and_iceberg_orders_must_be_able_to_rest():
    with refused("order_post_only_rests"):
        OrderFactory(post_only=True, time_in_force=TimeInForce.IOC)
    # Stop and take-profit limits enter the book when they fire: never post-only.
    with refused("order_post_only_rests"):
        OrderFactory(post_only=True, type=OrderType.STOP_LIMIT, stop_price=Decimal(90))
    with refused("order_post_only_rests"):
        OrderFactory(post_only=True, type=OrderType.TAKE_PROFIT_LIMIT, stop_price=Decimal(110))
    assert OrderFactory(post_only=True).post_only
    with refused("order_iceberg_rules"):
        OrderFactory(display_quantity=Decimal("0.5"), time_in_force=TimeInForce.FOK)
    with refused("order_iceberg_rules"):
        OrderFactory(display_quantity=Decimal(2), quantity=Decimal(1))


def test_prices_and_quantities_sit_on_the_market_grid():
    market = MarketFactory(tick_size=Decimal("0.01"), lot_size=Decimal("0.001"))
    with refused("not a multiple of the tick size"):
        OrderFactory(market=market, price=Decimal("100.005"))
    with refused("not a multiple of the lot size"):
        OrderFactory(market=market, quantity=Decimal("1.0005"), remaining=Decimal("1.0005"))
    order = OrderFactory(market=market)
    with refused("not a multiple of the tick size"):
        Order.objects.filter(pk=order.pk).update(price=Decimal("99.999"))


# --- orders: identity ----------------------------------------------------------------


def test_a_nonce_is_used_once_per_account():
    first = OrderFactory(nonce=7)
    with refused("order_unique_nonce"):
        OrderFactory(account=first.account, nonce=7)
    assert OrderFactory(nonce=7).nonce == 7  # another account may use the same nonce


def test_a_client_order_id_is_used_once_per_account():
    first = OrderFactory(client_order_id="my-order-1")
    with refused("order_unique_client_order_id"):
        OrderFactory(account=first.account, client_order_id="my-order-1")
    assert OrderFactory(client_order_id="my-order-1").client_order_id == "my-order-1"


def test_an_order_hash_is_used_once():
    first = OrderFactory()
    with refused("exchange_order_order_hash_key"):
        OrderFactory(order_hash=first.order_hash)


def test_what_the_trader_signed_never_changes():
    order = OrderFactory()
    other = AccountFactory()
    for assignment, params in [
        ("account_id = %s", [other.pk]),
        ("side = 'SELL'", []),
        ("nonce = nonce + 1", []),
        ("order_hash = %s", [random_hex(32)]),
        ("client_order_id = 'renamed'", []),
    ]:
        with refused("pgtrigger: Cannot update rows"):
            sql(f"UPDATE exchange_order SET {assignment} WHERE id = %s", [*params, order.pk])


def test_orders_are_never_deleted():
    order = OrderFactory()
    with refused(f"order {order.pk} cannot be deleted"):
        sql("DELETE FROM exchange_order WHERE id = %s", [order.pk])


# --- orders: the status state machine -----------------------------------------------


def test_orders_are_created_pending():
    with refused("orders are created PENDING"):
        OrderFactory(status=OrderStatus.OPEN, sequence=1)


def test_a_full_lifecycle_follows_allowed_transitions():
    order = advance(OrderFactory(), OrderStatus.FILLED)
    assert order.remaining == 0
    assert order.done_at is not None


@pytest.mark.parametrize(
    ("terminal", "target"),
    [(end, to) for end in TERMINAL_STATUSES for to in OrderStatus.values if to != end],
)
def test_terminal_states_are_final(terminal, target):
    order = advance(OrderFactory(), terminal)
    with refused(FINISHED):
        sql("UPDATE exchange_order SET status = %s WHERE id = %s", [target, order.pk])


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (OrderStatus.OPEN, OrderStatus.PENDING),
        (OrderStatus.OPEN, OrderStatus.UNTRIGGERED),
        (OrderStatus.OPEN, OrderStatus.REJECTED),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.OPEN),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING),
        (OrderStatus.UNTRIGGERED, OrderStatus.PENDING),
        (OrderStatus.UNTRIGGERED, OrderStatus.REJECTED),
    ],
)
def test_live_orders_move_only_forward(start, target):
    order = advance(OrderFactory(), start)
    with refused(INVALID_TRANSITION):
        sql("UPDATE exchange_order SET status = %s WHERE id = %s", [target, order.pk])


def test_status_agrees_with_fills():
    order = advance(OrderFactory(), OrderStatus.OPEN)
    with refused("order_status_matches_fills"):  # filled everything, but still OPEN
        sql(
            "UPDATE exchange_order SET filled = 1, remaining = 0, filled_quote = 100,"
            " average_price = 100 WHERE id = %s",
            [order.pk],
        )
    with refused("order_status_matches_fills"):  # FILLED with nothing filled
        sql(
            "UPDATE exchange_order SET status = 'FILLED', done_at = now() WHERE id = %s",
            [order.pk],
        )


def test_accepted_orders_carry_the_matchers_sequence_and_terminal_ones_an_end_time():
    order = OrderFactory()
    with refused("order_sequenced_once_accepted"):
        sql("UPDATE exchange_order SET status = 'OPEN' WHERE id = %s", [order.pk])
    advance(order, OrderStatus.OPEN)
    with refused("order_done_at_iff_terminal"):
        sql("UPDATE exchange_order SET status = 'CANCELLED' WHERE id = %s", [order.pk])
    other = OrderFactory(market=order.market)
    with refused("order_unique_sequence"):
        sql(
            "UPDATE exchange_order SET status = 'OPEN', sequence = %s, accepted_at = now()"
            " WHERE id = %s",
            [order.sequence, other.pk],
        )


def test_a_rejection_says_why_and_never_took_a_place_in_the_queue():
    order = OrderFactory()
    with refused("order_rejection_has_reason"):
        sql(
            "UPDATE exchange_order SET status = 'REJECTED', done_at = now() WHERE id = %s",
            [order.pk],
        )
    with refused("order_sequenced_once_accepted"):
        sql(
            "UPDATE exchange_order SET status = 'REJECTED', sequence = 1, accepted_at = now(),"
            " done_at = now(), reason = 'POST_ONLY_WOULD_TAKE' WHERE id = %s",
            [order.pk],
        )


@pytest.mark.parametrize("terminal", TERMINAL_STATUSES)
def test_a_finished_orders_terms_fills_and_priority_never_change(terminal):
    order = advance(OrderFactory(), terminal)
    for assignment in [
        "price = 200",
        "quantity = 2, remaining = 2 - filled",
        "filled_quote = filled_quote * 2, average_price = average_price * 2",
        "sequence = coalesce(sequence, 0) + 1000000",
        "accepted_at = now() - interval '1 day'",
        "done_at = now() - interval '1 day'",
        "reason = 'rewritten'",
        "metadata = '{\"note\": 1}'",
    ]:
        with refused(FINISHED):
            sql(f"UPDATE exchange_order SET {assignment} WHERE id = %s", [order.pk])


def test_an_orders_average_price_is_its_filled_quote_over_filled():
    order = advance(OrderFactory(), OrderStatus.OPEN)
    fill = "status = 'PARTIALLY_FILLED', filled = %s, remaining = 1 - %s, filled_quote = %s"
    with refused("order_fill_totals_consistent"):
        sql(
            f"UPDATE exchange_order SET {fill}, average_price = 7 WHERE id = %s",
            [Decimal("0.4"), Decimal("0.4"), Decimal(40), order.pk],
        )
    with refused("order_fill_totals_consistent"):  # more than a unit of the 8th place off
        sql(
            f"UPDATE exchange_order SET {fill}, average_price = 33.33333332 WHERE id = %s",
            [Decimal("0.3"), Decimal("0.3"), Decimal(10), order.pk],
        )
    # 40.00000001 / 0.4 = 100.000000025: the matcher rounds half to even.
    sql(
        f"UPDATE exchange_order SET {fill}, average_price = 100.00000002 WHERE id = %s",
        [Decimal("0.4"), Decimal("0.4"), Decimal("40.00000001"), order.pk],
    )


# --- orders: status history written by trigger --------------------------------------


def test_every_status_change_lands_in_the_history_table():
    order = OrderFactory()
    advance(order, OrderStatus.PARTIALLY_FILLED)
    # A change that keeps the status (an amend) writes no history row.
    sql("UPDATE exchange_order SET price = 101 WHERE id = %s", [order.pk])
    sql(
        "UPDATE exchange_order SET status = 'FILLED', filled = 1, remaining = 0,"
        " filled_quote = 100, done_at = now() WHERE id = %s",
        [order.pk],
    )
    history = list(
        OrderStatusHistory.objects.filter(order=order).values_list(
            "from_status", "to_status", "filled"
        )
    )
    assert history == [
        (None, "PENDING", Decimal(0)),
        ("PENDING", "OPEN", Decimal(0)),
        ("OPEN", "PARTIALLY_FILLED", Decimal("0.4")),
        ("PARTIALLY_FILLED", "FILLED", Decimal(1)),
    ]


def test_one_update_of_many_orders_records_each_status_change_once():
    moved, kept = OrderFactory(), OrderFactory()
    advance(kept, OrderStatus.OPEN)
    sql(
        "UPDATE exchange_order SET status = 'OPEN', sequence = id, accepted_at = now()"
        " WHERE id IN (%s, %s) AND status = 'PENDING'",
        [moved.pk, kept.pk],
    )
    sql("UPDATE exchange_order SET metadata = '{}' WHERE id IN (%s, %s)", [moved.pk, kept.pk])
    assert list(
        OrderStatusHistory.objects.filter(order__in=[moved, kept])
        .order_by("order", "id")
        .values_list("order", "from_status", "to_status")
    ) == [
        (moved.pk, None, "PENDING"),
        (moved.pk, "PENDING", "OPEN"),
        (kept.pk, None, "PENDING"),
        (kept.pk, "PENDING", "OPEN"),
    ]


def test_an_orders_id_is_read_only():
    order = OrderFactory()
    with refused("identity_read_only|read.only|Cannot"):
        sql("UPDATE exchange_order SET id = id + 1000000 WHERE id = %s", [order.pk])


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("order_hash", "0x" + "a" * 63, "order_hash_format"),
        ("order_hash", "0x" + "a" * 63 + "G", "order_hash_format"),
        ("signature", "0x" + "b" * 129, "order_signature_format"),
        ("signature", "0X" + "b" * 130, "order_signature_format"),
        ("client_order_id", "has space", "order_client_order_id_format"),
    ],
)
def test_signed_identity_columns_keep_their_format(column, value, rule):
    with refused(rule):
        OrderFactory(**{column: value})


def test_status_history_is_append_only():
    order = advance(OrderFactory(), OrderStatus.OPEN)
    row = OrderStatusHistory.objects.filter(order=order).first()
    with refused("Cannot update rows"):
        OrderStatusHistory.objects.filter(pk=row.pk).update(to_status="FILLED")
    with refused("Cannot delete rows"):
        sql("DELETE FROM exchange_orderstatushistory WHERE id = %s", [row.pk])


@pytest.mark.django_db(transaction=True)
def test_updated_at_is_maintained_by_the_database():
    order = OrderFactory()
    created = Order.objects.values_list("updated_at", flat=True).get(pk=order.pk)
    sql(
        "UPDATE exchange_order SET price = 101, updated_at = '2000-01-01T00:00:00Z' WHERE id = %s",
        [order.pk],
    )
    updated = Order.objects.values_list("updated_at", flat=True).get(pk=order.pk)
    assert updated > created
    assert updated.year > 2000


# --- trades ---------------------------------------------------------------------------


@pytest.fixture
def crossing_orders(market):
    maker = advance(OrderFactory(market=market, side=Side.SELL), OrderStatus.OPEN)
    taker = advance(OrderFactory(market=market, side=Side.BUY), OrderStatus.OPEN)
    return maker, taker


def make_trade(maker: Order, taker: Order, **overrides) -> Trade:
    fields = {
        "market": maker.market,
        "sequence": 1,
        "maker_order": maker,
        "taker_order": taker,
        "buyer": taker.account,
        "seller": maker.account,
        "aggressor_side": Side.BUY,
        "price": Decimal(100),
        "quantity": Decimal("0.5"),
        "quote_quantity": Decimal(50),
        "maker_fee": Decimal("0.01"),
        "taker_fee": Decimal("0.025"),
    } | overrides
    return Trade.objects.create(**fields)


def test_trades_are_never_deleted(crossing_orders):
    trade = make_trade(*crossing_orders)
    with refused("Cannot delete rows"):
        sql("DELETE FROM exchange_trade WHERE id = %s", [trade.pk])


@pytest.mark.parametrize(
    "assignment",
    [
        "price = price + 1",
        "quantity = quantity * 2, quote_quantity = quote_quantity * 2",
        "buyer_id = seller_id",
        "maker_fee = 0",
        "executed_at = now() - interval '1 day'",
    ],
)
def test_a_trade_never_changes_its_terms_or_parties(crossing_orders, assignment):
    trade = make_trade(*crossing_orders)
    with refused("Cannot update rows"):
        sql(f"UPDATE exchange_trade SET {assignment} WHERE id = %s", [trade.pk])


def test_a_trade_may_only_move_along_its_settlement_states(crossing_orders):
    trade = make_trade(*crossing_orders)
    Trade.objects.filter(pk=trade.pk).update(settlement_status=SettlementStatus.SETTLING)
    with refused("trade_settled_at_iff_settled"):
        Trade.objects.filter(pk=trade.pk).update(settlement_status=SettlementStatus.SETTLED)
    sql(
        "UPDATE exchange_trade SET settlement_status = 'SETTLED', settled_at = now() WHERE id = %s",
        [trade.pk],
    )
    with refused(INVALID_TRANSITION):
        Trade.objects.filter(pk=trade.pk).update(settlement_status=SettlementStatus.PENDING)


def test_a_trader_never_trades_with_themself(market):
    account = AccountFactory()
    maker = advance(OrderFactory(market=market, account=account, side=Side.SELL), "OPEN")
    taker = advance(OrderFactory(market=market, account=account, side=Side.BUY), "OPEN")
    with refused("trade_no_self_trade"):
        make_trade(maker, taker)


def test_a_trades_notional_is_exactly_price_times_quantity(crossing_orders):
    with refused("trade_quote_quantity_exact"):
        make_trade(*crossing_orders, quote_quantity=Decimal("50.00000001"))


def test_fees_never_pay_out_more_than_they_take(crossing_orders):
    with refused("trade_fees_never_net_negative"):
        make_trade(*crossing_orders, maker_fee=Decimal("-0.03"), taker_fee=Decimal("0.025"))


def test_a_trades_parties_are_its_orders_accounts(crossing_orders):
    maker, taker = crossing_orders
    stranger = AccountFactory()
    with refused("buyer/seller disagree"):
        make_trade(maker, taker, buyer=stranger)
    with refused("sides disagree"):
        make_trade(
            maker, taker, aggressor_side=Side.SELL, buyer=maker.account, seller=taker.account
        )
    elsewhere = advance(OrderFactory(side=Side.BUY), OrderStatus.OPEN)
    with refused("another market"):
        make_trade(maker, elsewhere, buyer=elsewhere.account)


def test_a_bad_trade_among_many_in_one_insert_is_refused(crossing_orders):
    maker, taker = crossing_orders
    fields = {
        "market": maker.market,
        "maker_order": maker,
        "taker_order": taker,
        "buyer": taker.account,
        "seller": maker.account,
        "aggressor_side": Side.BUY,
        "price": Decimal(100),
        "quantity": Decimal("0.01"),
        "quote_quantity": Decimal(1),
        "maker_fee": Decimal(0),
        "taker_fee": Decimal(0),
    }
    trades = [Trade(sequence=n, **fields) for n in range(1, 20)]
    trades.append(Trade(sequence=20, **(fields | {"buyer": AccountFactory()})))
    with refused("buyer/seller disagree"):
        Trade.objects.bulk_create(trades)
    Trade.objects.bulk_create(trades[:-1])
    assert Trade.objects.filter(maker_order=maker).count() == 19


# --- the matcher's command journal ---------------------------------------------------


def test_commands_are_created_pending_and_marked_done_once():
    command = OrderCommandFactory()
    with refused("commands are created PENDING"):
        OrderCommandFactory(status=CommandStatus.DONE)
    with refused("ordercommand_done_is_processed"):
        OrderCommand.objects.filter(pk=command.pk).update(status=CommandStatus.DONE)
    sql(
        "UPDATE exchange_ordercommand SET status = 'DONE', processed_at = now(), sequence = 1"
        " WHERE id = %s",
        [command.pk],
    )
    with refused(FINISHED):
        OrderCommand.objects.filter(pk=command.pk).update(status=CommandStatus.PENDING)


def test_a_done_commands_place_result_and_time_never_change():
    command = OrderCommandFactory()
    sql(
        "UPDATE exchange_ordercommand SET status = 'DONE', sequence = 1, processed_at = now(),"
        " result = '{\"events\": 1}' WHERE id = %s",
        [command.pk],
    )
    for assignment in [
        "sequence = sequence + 1000",
        'result = \'{"rejected": "UNPROCESSABLE"}\'',
        "processed_at = now() + interval '1 day'",
    ]:
        with refused(FINISHED):
            sql(f"UPDATE exchange_ordercommand SET {assignment} WHERE id = %s", [command.pk])


def test_a_command_is_never_rewritten_or_deleted():
    command = OrderCommandFactory()
    with refused("Cannot update rows"):
        sql(
            "UPDATE exchange_ordercommand SET payload = %s::jsonb WHERE id = %s",
            ['{"price": "1"}', command.pk],
        )
    with refused("Cannot update rows"):
        sql("UPDATE exchange_ordercommand SET kind = 'CANCEL' WHERE id = %s", [command.pk])
    with refused("Cannot delete rows"):
        sql("DELETE FROM exchange_ordercommand WHERE id = %s", [command.pk])


def test_a_command_names_what_its_kind_needs(market):
    with refused("ordercommand_targets_match_kind"):
        OrderCommand.objects.create(market=market, kind="CANCEL")
    with refused("ordercommand_targets_match_kind"):
        OrderCommand.objects.create(market=market, kind="HALT", account=AccountFactory())
    assert OrderCommand.objects.create(market=market, kind="HALT").status == "PENDING"


def test_a_signed_amends_nonce_is_used_once_per_account():
    order = OrderFactory()
    other = OrderFactory()

    def amend(target, nonce):
        return OrderCommand.objects.create(
            market=target.market,
            kind="AMEND",
            account=target.account,
            order=target,
            payload={"price": "99", "nonce": nonce, "signature": random_hex(65)},
        )

    amend(order, "7")
    with refused("ordercommand_unique_amend_nonce"):
        amend(order, "7")
    assert amend(other, "7").pk  # another account's nonces are its own
    # Amends journalled before signed amends carry no nonce: any number of them.
    for _ in range(2):
        OrderCommand.objects.create(
            market=order.market, kind="AMEND", account=order.account, order=order
        )


# --- markets, accounts, API keys -----------------------------------------------------


def test_a_markets_tick_and_lot_keep_every_notional_exact():
    with refused("market_notional_exact"):
        MarketFactory(tick_size=Decimal("0.0001"), lot_size=Decimal("0.00001"))
    assert MarketFactory(tick_size=Decimal("0.001"), lot_size=Decimal("0.00001")).pk


def test_a_maker_rebate_never_exceeds_the_taker_fee():
    with refused("market_fee_rates"):
        MarketFactory(maker_fee_rate=Decimal("-0.001"), taker_fee_rate=Decimal("0.0005"))
    assert MarketFactory(maker_fee_rate=Decimal("-0.0001"), taker_fee_rate=Decimal("0.0005"))


def test_a_maker_never_pays_more_than_a_taker():
    # A resting buy holds for its fee at the taker rate, and pays the maker rate.
    with refused("market_fee_rates"):
        MarketFactory(maker_fee_rate=Decimal("0.001"), taker_fee_rate=Decimal("0.0005"))
    from portfolio.models import FeeTier

    market = MarketFactory()
    with refused("order_fee_rates"):  # the rates an order was accepted at, which it pays
        OrderFactory(
            market=market, maker_fee_rate=Decimal("0.0004"), taker_fee_rate=Decimal("0.0003")
        )
    with refused("feetier_rates"):
        FeeTier.objects.create(
            name="upside down",
            quote=market.quote,
            min_volume_30d=Decimal(1000),
            maker_fee_rate=Decimal("0.0004"),
            taker_fee_rate=Decimal("0.0003"),
        )


def test_a_markets_minimum_quantity_sits_on_its_lot():
    with refused("market_min_quantity_on_lot"):
        MarketFactory(lot_size=Decimal("0.01"), min_quantity=Decimal("0.015"))


def test_a_closed_market_stays_closed(market):
    Market.objects.filter(pk=market.pk).update(status=MarketStatus.CLOSED)
    with refused(INVALID_TRANSITION):
        Market.objects.filter(pk=market.pk).update(status=MarketStatus.OPEN)


def test_wallet_addresses_are_lower_case_hex_and_never_change():
    with refused("account_wallet_address_format"):
        AccountFactory(wallet_address="0x" + "AB" * 20)
    account = AccountFactory()
    with refused("Cannot update rows"):
        Account.objects.filter(pk=account.pk).update(wallet_address=random_hex(20))


def test_api_key_scopes_are_known_and_fixed(trader):
    def make_key(scopes):
        return ApiKey.objects.create(
            account=trader,
            name="bot",
            prefix=random_hex(6)[:16],
            key_hash="a" * 64,
            scopes=scopes,
        )

    with refused("apikey_scopes_valid"):
        make_key(["read", "admin"])
    with refused("apikey_scopes_valid"):
        make_key([])
    key = make_key(["read"])
    with refused("Cannot update rows"):
        ApiKey.objects.filter(pk=key.pk).update(scopes=["read", "withdraw"])


# --- the indexes serve the queries that matter --------------------------------------


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (
            "SELECT id FROM exchange_order WHERE market_id = 1 AND side = 'BUY'"
            " AND status IN ('OPEN', 'PARTIALLY_FILLED', 'UNTRIGGERED')"
            " ORDER BY price, sequence",
            "order_live_book_idx",
        ),
        (
            "SELECT id FROM exchange_ordercommand WHERE market_id = 1 AND status = 'PENDING'"
            " ORDER BY id LIMIT 500",
            "ordercommand_pending_",  # either of the two
        ),
        (
            "SELECT id FROM exchange_order WHERE account_id = 1 ORDER BY created_at DESC LIMIT 50",
            "order_account_recent_idx",
        ),
        (
            "SELECT id FROM exchange_trade WHERE market_id = 1 ORDER BY executed_at DESC LIMIT 50",
            "trade_market_time_idx",
        ),
    ],
)
def test_hot_queries_use_their_index(query, index):
    with connection.cursor() as cursor:
        # Without scans and sorts to fall back on, only an index that both finds the
        # rows and yields them in the query's order can serve it.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("EXPLAIN " + query)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert index in plan


# Written for every order, command, trade and ledger posting: an index there is paid for
# on each write, and a LIKE-prefix one (varchar_pattern_ops, which Django adds for
# unique=True and db_index=True text columns) serves no query of this platform.
HOT_WRITE_TABLES = (
    "exchange_order",
    "exchange_ordercommand",
    "exchange_trade",
    "exchange_orderstatushistory",
    "portfolio_ledgertransaction",
    "portfolio_posting",
    "portfolio_ledgeraccount",
    "portfolio_position",
    "portfolio_tradingstats",
)


def test_hot_write_tables_carry_no_like_prefix_indexes():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, indexname FROM pg_indexes"
            " WHERE tablename = ANY(%s) AND indexdef LIKE '%%_pattern_ops%%'",
            [list(HOT_WRITE_TABLES)],
        )
        found = cursor.fetchall()
        cursor.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename = ANY(%s)", [list(HOT_WRITE_TABLES)]
        )
        assert cursor.fetchone()[0] == len(HOT_WRITE_TABLES)
    assert found == []


def test_history_is_never_truncated_from_under_what_it_records(market, buyer, seller, staff):
    """A TRUNCATE fires no row trigger: each append-only table refuses one while what
    its rows are the history of remains (a flush that empties both in one statement, as
    a test database's does, passes)."""
    from datetime import timedelta

    from compliance.services.audit import Actor, audit_record
    from exchange.services.archiving import orders_archive
    from tests.portfolio import sim

    ask = sim.place(seller, market, "SELL", "1", "100")
    bid = sim.place(buyer, market, "BUY", "1", "100")
    sim.fill(ask, bid, "1")  # a trade not yet settled: no ledger transaction names it
    long_ago = timezone.now() - timedelta(days=400)
    old = sim.place(buyer, market, "BUY", "1", "90")
    sim.cancel(old)
    sim.backdate(Order.objects.get(pk=old.pk), long_ago)
    assert orders_archive(done_before=long_ago + timedelta(seconds=1), limit=10) == 1
    audit_record(actor=Actor(user=staff), action="market.halt", target=market, reason="test")
    sql("SET CONSTRAINTS ALL IMMEDIATE")  # no TRUNCATE with deferred checks pending

    for table, remains in [
        ("exchange_orderstatushistory", "the orders whose history it holds remain"),
        ("exchange_trade", "orders that were filled remain"),
        ("exchange_orderarchive", "rows of other tables name its rows"),
        ("portfolio_posting", "ledger balances made of its postings remain"),
        ("compliance_auditevent", "the staff and the venue it records remain"),
    ]:
        with refused(f'cannot truncate table "{table}": {remains}'):
            sql(f"TRUNCATE {table}")
