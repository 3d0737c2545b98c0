"""Serializers that build their fields once render exactly what DRF renders."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework import serializers

from exchange.api.serializers import OrderSerializer
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
