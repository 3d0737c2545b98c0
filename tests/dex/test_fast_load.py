"""Models loaded by ``FastLoad.from_db`` come out exactly as ``Model.__init__`` makes them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.apps import apps
from django.db import models
from django.db.models.signals import post_init
from django.utils import timezone

from dex.db import FastLoad, fast_load_unsafe
from exchange.models import Order, OrderCommand, Trade
from tests.factories import OrderCommandFactory, OrderFactory
from tests.portfolio import sim
from tests.trades import trade_at

pytestmark = pytest.mark.django_db

FAST_MODELS = [m for m in apps.get_models() if issubclass(m, FastLoad)]


def test_the_matcher_path_models_load_fast():
    assert {Order, OrderCommand, Trade} <= set(FAST_MODELS)


@pytest.mark.parametrize("model", FAST_MODELS, ids=lambda m: m.__name__)
def test_every_fast_loading_model_is_one_it_is_safe_for(model):
    assert fast_load_unsafe(model) == []


def test_an_init_receiver_makes_a_model_unsafe_to_load_fast():
    def receiver(**kwargs):
        pass

    post_init.connect(receiver, sender=Order)
    try:
        assert fast_load_unsafe(Order) == ["post_init receivers"]
    finally:
        post_init.disconnect(receiver, sender=Order)


def django_loaded(queryset: models.QuerySet) -> list:
    """The same rows through ``Model.from_db`` (``Model.__init__``)."""
    model = queryset.model
    model.from_db = classmethod(models.Model.from_db.__func__)
    try:
        return list(queryset.all())
    finally:
        del model.from_db


def state(instance: models.Model) -> dict:
    values = {k: v for k, v in instance.__dict__.items() if k != "_state"}
    return {
        "values": values,
        "adding": instance._state.adding,
        "db": instance._state.db,
        "cached": sorted(instance._state.fields_cache),
    }


def assert_same(queryset: models.QuerySet) -> None:
    fast, slow = list(queryset.all()), django_loaded(queryset)
    assert fast, "the query must load rows to compare"
    assert [state(o) for o in fast] == [state(o) for o in slow]
    assert [type(o) for o in fast] == [type(o) for o in slow]


def test_orders_commands_and_trades_load_as_django_loads_them(market, buyer, seller):
    sim.place(buyer, market, "BUY", "1.5", "100")
    OrderCommandFactory(order=OrderFactory(market=market, account=seller, price=Decimal("101")))
    trade_at(market, "100.5", "0.25", timezone.now())

    assert_same(Order.objects.order_by("id"))
    assert_same(Order.objects.defer("signature", "metadata", "created_at").order_by("id"))
    assert_same(Order.objects.only("id", "status").order_by("id"))
    assert_same(OrderCommand.objects.select_related("order").order_by("id"))
    assert_same(
        OrderCommand.objects.select_related("order").defer("order__signature").order_by("id")
    )
    assert_same(Trade.objects.select_related("maker_order", "taker_order").order_by("id"))


def test_a_fast_loaded_order_behaves_as_a_model_instance(market, buyer):
    placed = sim.place(buyer, market, "BUY", "1", "100")
    order = Order.objects.defer("signature").get(pk=placed.pk)
    assert order == placed
    assert not order._state.adding
    assert "signature" not in order.__dict__
    assert order.signature == placed.signature  # a deferred field loads on first use
    assert order.market.pk == market.pk  # a relation loads and is cached
    order.refresh_from_db()
    assert order.status == placed.status
    order.save(update_fields=["metadata"])  # an existing row: UPDATE, not INSERT
    assert Order.objects.filter(pk=placed.pk).count() == 1
