"""Serializers that build their fields once render and parse exactly as DRF does."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from dex.api.rendering import ParseOnce
from exchange.api.serializers import OrderBatchSerializer, OrderPlaceSerializer, OrderSerializer
from exchange.models import Order, OrderArchive, OrderStatus, OrderType, Side, TimeInForce
from exchange.services.archiving import orders_archive
from tests.factories import OrderFactory
from tests.portfolio import sim
from tests.trades import trade_at

pytestmark = pytest.mark.django_db


def drf_rendering(order: Order) -> dict:
    """What DRF's own ``to_representation`` makes of the order, fields built anew."""
    return serializers.ModelSerializer.to_representation(OrderSerializer(), order)


def test_an_order_renders_as_drf_renders_it_whatever_it_holds(market):
    trade = trade_at(market, "101.25", "0.5", timezone.now())
    orders = [
        OrderFactory(market=market),
        OrderFactory(
            market=market,
            side=Side.SELL,
            type=OrderType.STOP_LIMIT,
            stop_price=Decimal("99.50"),
            time_in_force=TimeInForce.GTT,
            expires_at=timezone.now() + timedelta(hours=1),
            display_quantity=Decimal("0.100"),
        ),
        OrderFactory(
            market=market,
            type=OrderType.MARKET,
            price=None,
            quantity=None,
            remaining=None,
            quote_quantity=Decimal("250"),
            time_in_force=TimeInForce.IOC,
        ),
        Order.objects.get(pk=trade.maker_order_id),  # filled: average price, done_at
    ]
    sim.backdate(Order.objects.get(pk=trade.taker_order_id), timezone.now() - timedelta(days=9))
    assert orders_archive(done_before=timezone.now() - timedelta(days=1), limit=10) == 1
    archived = OrderArchive.objects.get(pk=trade.taker_order_id)
    orders.append(archived.as_order())  # as the API reads an archived order

    for order in orders:
        assert OrderSerializer(order).data == drf_rendering(order), order
    assert OrderSerializer(orders, many=True).data == [drf_rendering(o) for o in orders]
    assert {o.status for o in orders} >= {OrderStatus.PENDING, OrderStatus.FILLED}


def test_a_subclass_renders_its_own_fields(market):
    class Narrow(OrderSerializer):
        class Meta(OrderSerializer.Meta):
            fields = ["id", "status"]

    order = OrderFactory(market=market)
    assert len(OrderSerializer(order).data) > 2  # the parent's fields built first
    assert Narrow(order).data == {"id": order.pk, "status": "PENDING"}


def test_a_serializer_with_method_fields_is_refused(market):
    class WithMethod(OrderSerializer):
        side_word = serializers.SerializerMethodField()

        class Meta(OrderSerializer.Meta):
            fields = ["id", "side_word"]

        def get_side_word(self, order):
            return order.side.lower()

    with pytest.raises(TypeError, match="method fields"):
        WithMethod(OrderFactory(market=market)).data  # noqa: B018


# --- parsing ------------------------------------------------------------------------------


class FreshPlace(OrderPlaceSerializer):
    """``OrderPlaceSerializer`` validating as DRF does: its fields built for each instance."""

    def __init__(self, *args, **kwargs) -> None:
        serializers.Serializer.__init__(self, *args, **kwargs)


VALID_ORDER = {
    "market": "ETH-USDC",
    "client_order_id": "bot-1",
    "side": "BUY",
    "type": "LIMIT",
    "price": "100.25",
    "quantity": "0.5",
    "nonce": "7",
    "signature": "0x" + "ab" * 65,
}
# For each field: values that pass, values that fail (wrong type, form, range), absent.
WIRE_VALUES = {
    "market": ["ETH-USDC", "x" * 26, 5, None],
    "client_order_id": ["bot-1", "no spaces", "", "a" * 65],
    "side": ["BUY", "SELL", "buy", 1],
    "type": ["LIMIT", "MARKET", "STOP_LIMIT", "ICEBERG"],
    "time_in_force": ["GTC", "GTT", "FOK", "DAY"],
    "price": ["100.25", 100, "1e2", "0", "-1", "NaN", "1.123456789", "١٠٠", True],
    "quantity": ["0.5", "0.00000001", "1" + "0" * 30, "Infinity", [], "1_0"],
    "post_only": [True, "false", "maybe", None],
    "self_trade_prevention": ["CANCEL_BOTH", "NONE", "nope"],
    "expires_at": [1_900_000_000, "1900000000", -1, 10**20, "soon"],
    "nonce": ["7", 7, str(2**256), -1, "0x10", 1.5, False],
    "signature": ["0x" + "ab" * 65, "0x" + "ab" * 64, "ab" * 65, None],
    "order_hash": ["0x" + "cd" * 32, "0x" + "zz" * 32],
}
ABSENT = object()


@st.composite
def wire_orders(draw) -> dict:
    order = dict(VALID_ORDER)
    for name, values in WIRE_VALUES.items():
        value = draw(st.sampled_from([ABSENT, *values]))
        if value is ABSENT:
            order.pop(name, None)
        else:
            order[name] = value
    return order


def outcome(serializer) -> tuple:
    valid = serializer.is_valid()
    return (valid, dict(serializer.validated_data) if valid else serializer.errors)


@settings(max_examples=300, deadline=None)
@given(wire_orders())
def test_an_order_parses_as_drf_parses_it_whatever_it_holds(data):
    assert outcome(OrderPlaceSerializer(data=data)) == outcome(FreshPlace(data=data))


def test_a_batch_parses_each_order_as_drf_parses_it():
    class FreshBatch(OrderBatchSerializer):
        orders = FreshPlace(many=True, allow_empty=False, max_length=20)

    orders = [VALID_ORDER, VALID_ORDER | {"price": "0"}, {"side": "BUY"}, VALID_ORDER]
    once, fresh = OrderBatchSerializer(data={"orders": orders}), FreshBatch(data={"orders": orders})
    assert outcome(once) == outcome(fresh)
    assert not once.is_valid()
    assert set(once.errors["orders"][1]) == {"price"}


def test_the_fields_are_built_once_for_every_instance_and_thread():
    first = list(OrderPlaceSerializer(data={}).fields.values())
    assert [f.field_name for f in first] == list(FreshPlace().fields)
    again = OrderPlaceSerializer().fields.values()
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert not any(a is b for a, b in zip(first, FreshPlace().fields.values(), strict=True))

    # Validations in many threads at once, each with its own data, each get their own.
    results: dict[int, tuple] = {}

    def parse(i: int) -> None:
        data = VALID_ORDER | {"client_order_id": f"bot-{i}", "nonce": i}
        if i % 3 == 0:
            data["price"] = "-1"
        for _ in range(50):
            results[i] = outcome(OrderPlaceSerializer(data=data))

    threads = [threading.Thread(target=parse, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, (valid, got) in results.items():
        assert valid == (i % 3 != 0)
        if valid:
            assert (got["client_order_id"], got["nonce"]) == (f"bot-{i}", i)
        else:
            assert set(got) == {"price"}


def test_a_partial_instance_parses_with_its_own_fields():
    partial = OrderPlaceSerializer(data={"side": "SELL"}, partial=True)
    assert partial.is_valid(), partial.errors
    assert dict(partial.validated_data) == {"side": "SELL"}
    assert not OrderPlaceSerializer(data={"side": "SELL"}).is_valid()  # the shared fields


def test_fields_that_read_the_serializer_are_refused():
    class Nested(ParseOnce, serializers.Serializer):
        inner = OrderPlaceSerializer()

    class Hidden(ParseOnce, serializers.Serializer):
        who = serializers.HiddenField(default=serializers.CurrentUserDefault())

    for cls in (Nested, Hidden):
        with pytest.raises(TypeError, match="cannot parse once"):
            cls(data={}).is_valid()
