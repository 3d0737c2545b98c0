"""The back office lists every model with the columns, filters and search staff use,
and keeps history read-only."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from exchange.models import (
    Account,
    ApiKey,
    Asset,
    Market,
    Order,
    OrderArchive,
    OrderBookSnapshot,
    OrderCommand,
    OrderStatusHistory,
    Trade,
)
from exchange.services.archiving import orders_archive
from tests.factories import OrderCommandFactory, OrderFactory
from tests.portfolio import sim
from tests.trades import trade_at

pytestmark = pytest.mark.django_db

ALL_MODELS = [
    Asset,
    Market,
    Account,
    ApiKey,
    Order,
    OrderStatusHistory,
    OrderCommand,
    Trade,
    OrderBookSnapshot,
    OrderArchive,
]
READ_ONLY = [
    ApiKey,
    Order,
    OrderStatusHistory,
    OrderCommand,
    Trade,
    OrderBookSnapshot,
    OrderArchive,
]


def url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_every_model_has_a_searchable_filterable_changelist(admin_client, model):
    model_admin = admin.site._registry[model]
    assert len(model_admin.list_display) >= 4
    assert model_admin.list_filter
    response = admin_client.get(url(model, "changelist"), {"q": "0x"})
    assert response.status_code == 200


@pytest.mark.parametrize("model", READ_ONLY, ids=lambda m: m.__name__)
def test_history_is_read_only_in_the_admin(admin_client, model):
    assert admin_client.get(url(model, "add")).status_code == 403
    model_admin = admin.site._registry[model]
    assert not model_admin.has_change_permission(request=None)
    assert not model_admin.has_delete_permission(request=None)


def test_an_order_page_shows_its_status_history(admin_client):
    order = OrderFactory(price=Decimal("123.45"))
    OrderCommandFactory(order=order)
    response = admin_client.get(url(Order, "change", order.pk))
    assert response.status_code == 200
    assert b"123.45" in response.content
    assert b"PENDING" in response.content
    # View-only: no save button, and a POST changes nothing.
    assert b'name="_save"' not in response.content
    assert admin_client.post(url(Order, "change", order.pk), {"price": "1"}).status_code == 403


def test_order_changelist_does_not_query_per_row(admin_client, django_assert_max_num_queries):
    for _ in range(30):
        OrderFactory()
    with django_assert_max_num_queries(12):
        assert admin_client.get(url(Order, "changelist")).status_code == 200


def test_market_status_and_pair_are_not_editable_by_form(admin_client, market):
    response = admin_client.get(url(Market, "change", market.pk))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "status" not in form.fields
    assert "base" not in form.fields
    # Fixed once listed: fees and limits change only through the matcher's journal
    # (the back office's rules form), tick and lot size never.
    assert "tick_size" not in form.fields
    assert "maker_fee_rate" not in form.fields
    add_form = admin_client.get(url(Market, "add")).context["adminform"].form
    assert {"tick_size", "maker_fee_rate"} <= set(add_form.fields)


def test_the_history_of_an_archived_order_still_shows(admin_client, market):
    trade = trade_at(market, "10", "1", timezone.now())
    moved = sim.backdate(trade.taker_order, timezone.now() - timedelta(days=400))
    assert orders_archive(done_before=timezone.now() - timedelta(days=1), limit=10) == 1
    history = OrderStatusHistory.objects.filter(order_id=moved.pk).first()
    assert history is not None
    pages = [
        url(OrderArchive, "change", moved.pk),
        url(Trade, "change", trade.pk),
        url(OrderStatusHistory, "change", history.pk),
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
    for model in (OrderArchive, Trade, OrderStatusHistory, OrderCommand):
        response = admin_client.get(url(model, "changelist"), {"q": str(moved.pk)})
        assert response.status_code == 200, model
    listed = admin_client.get(url(OrderArchive, "changelist"), {"q": str(moved.pk)})
    assert moved.client_order_id in listed.content.decode()
