"""Hand-written SELECTs read through ``ModelRows`` give what the querysets they replace
gave: the same instances (converters applied, deferred fields deferred), the same rows,
and, for the ledger-account lock, the same row locks."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models.signals import post_save

from dex.db import ModelRows
from exchange.matcher.market import UNREAD_ORDER_FIELDS, MarketMatcher
from exchange.models import CommandKind, Market, Order, OrderCommand
from exchange.selectors import market_get
from exchange.services.markets import market_halt
from exchange.services.orders import order_amend
from portfolio.lock_objects import ledger_accounts_lock
from portfolio.models import LedgerAccount, LedgerTransaction
from portfolio.services.ledger import order_holds, posted_keys
from tests.dex.test_fast_load import django_loaded, state
from tests.factories import OrderFactory, place_order
from tests.live import database_url
from tests.portfolio import sim

D = Decimal


def read(rows: ModelRows, table: str, where: str = "TRUE", params=()) -> list:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {rows.columns} FROM {table} AS {rows.alias} WHERE {where}"
            f" ORDER BY {rows.alias}.id",
            params,
        )
        return [rows.build(row, connection) for row in cursor.fetchall()]


@pytest.mark.django_db
def test_rows_build_the_instances_a_queryset_builds(market, buyer, seller):
    resting = sim.place(buyer, market, "BUY", "1.5", "100")
    place_order(seller, market, "SELL", "2", "101")
    order_amend(account=buyer, order=resting, price=D("99"))  # a JSON payload

    commands = read(ModelRows(OrderCommand, "c"), "exchange_ordercommand")
    assert [c.kind for c in commands] == [CommandKind.PLACE, CommandKind.AMEND]
    assert [state(c) for c in commands] == [
        state(c) for c in django_loaded(OrderCommand.objects.order_by("id"))
    ]
    assert commands[1].payload == {"price": "99"}  # jsonb decoded, not left as text

    orders = read(ModelRows(Order, "o", defer=UNREAD_ORDER_FIELDS), "exchange_order")
    assert [state(o) for o in orders] == [
        state(o) for o in django_loaded(Order.objects.defer(*UNREAD_ORDER_FIELDS).order_by("id"))
    ]
    assert "signature" not in orders[0].__dict__
    assert orders[0].signature == Order.objects.get(pk=orders[0].pk).signature  # loads on use

    # A model without FastLoad goes through Django's own from_db.
    accounts = read(ModelRows(LedgerAccount, "a"), "portfolio_ledgeraccount")
    assert [state(a) for a in accounts] == [state(a) for a in LedgerAccount.objects.order_by("id")]


def test_rows_refuse_a_field_the_model_does_not_have():
    with pytest.raises(ValueError, match="no fields"):
        ModelRows(Order, "o", defer=("nonce", "colour"))


@pytest.mark.django_db
def test_the_matchers_pending_read_is_the_querysets(market, buyer, seller):
    place_order(buyer, market, "BUY", "1", "100")
    place_order(seller, market, "SELL", "1", "102")
    market_halt(market=market)  # a command without an order

    matcher = MarketMatcher(market)
    with transaction.atomic():
        commands = matcher.pending(limit=10)
    expected = django_loaded(
        OrderCommand.objects.filter(market=market, status="PENDING")
        .select_related("order")
        .defer(*(f"order__{f}" for f in UNREAD_ORDER_FIELDS))
        .order_by("id")
    )
    assert [c.kind for c in commands] == [CommandKind.PLACE, CommandKind.PLACE, CommandKind.HALT]
    assert [state(c) for c in commands] == [state(c) for c in expected]
    assert [state(c.order) for c in commands[:2]] == [state(c.order) for c in expected[:2]]
    assert commands[2].order is None
    assert matcher.pending(limit=2) == commands[:2]


@pytest.mark.django_db
def test_order_holds_and_posted_keys_read_the_ledger(market, buyer):
    first = sim.place(buyer, market, "BUY", "1", "100")
    second = sim.place(buyer, market, "BUY", "2", "50")

    held = order_holds([first.pk, second.pk, 10**12])
    # Each order holds its notional plus the worst-case (taker) fee, in USDC.
    assert held == {first.pk: D("100.05"), second.pk: D("100.05")}
    assert order_holds([]) == {}

    keys = list(LedgerTransaction.objects.values_list("idempotency_key", flat=True)[:2])
    assert posted_keys([*keys, "order:0:never"]) == set(keys)
    assert posted_keys([]) == set()


@pytest.mark.django_db(transaction=True)
def test_ledger_accounts_lock_holds_each_row_until_commit(market, buyer):
    sim.place(buyer, market, "BUY", "1", "100")
    ids = list(LedgerAccount.objects.filter(owner=buyer).values_list("id", flat=True))
    other = psycopg.connect(database_url(), autocommit=True)  # TCP or the embedded socket
    try:
        with transaction.atomic():
            locked = ledger_accounts_lock(ids)
            assert sorted(locked) == sorted(ids)
            assert {a.pk: a.balance for a in locked.values()} == dict(
                LedgerAccount.objects.filter(pk__in=ids).values_list("id", "balance")
            )
            for pk in ids:
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    other.execute(
                        "SELECT 1 FROM portfolio_ledgeraccount WHERE id = %s FOR UPDATE NOWAIT",
                        [pk],
                    )
        # Committed: the rows are free again.
        for pk in ids:
            other.execute(
                "SELECT 1 FROM portfolio_ledgeraccount WHERE id = %s FOR UPDATE NOWAIT", [pk]
            )
        assert ledger_accounts_lock([]) == {}
    finally:
        other.close()


@pytest.mark.django_db
def test_insert_writes_what_save_writes_and_returns_the_stored_row(market, buyer):
    rows = ModelRows(OrderCommand, "c")
    new = OrderCommand(market=market, kind=CommandKind.HALT, payload={"why": "drill"})
    stored = rows.insert(new, connection)

    assert stored.pk is not None
    assert not stored._state.adding
    assert new.pk is None  # the instance given is left as it was
    reread = django_loaded(OrderCommand.objects.filter(pk=stored.pk))[0]
    assert state(stored)["values"] == state(reread)["values"]
    assert stored.created_at is not None  # the database's default, read back
    assert stored.payload == {"why": "drill"}
    assert stored.status == "PENDING"
    assert stored.market is market  # relations the instance had cached stay cached

    # Saved the ORM's way, the same fields come out the same (but for id and times).
    saved = OrderCommand.objects.create(
        market=market, kind=CommandKind.HALT, payload={"why": "drill"}
    )
    saved = OrderCommand.objects.get(pk=saved.pk)
    skip = {"id", "created_at"}
    assert {k: v for k, v in state(stored)["values"].items() if k not in skip} == {
        k: v for k, v in state(saved)["values"].items() if k not in skip
    }


@pytest.mark.django_db
def test_insert_refuses_what_it_cannot_write_and_breaks_constraints_as_save_does(market, buyer):
    rows = ModelRows(OrderCommand, "c")
    stored = rows.insert(OrderCommand(market=market, kind=CommandKind.HALT), connection)
    with pytest.raises(ValueError, match="not a new row"):
        rows.insert(stored, connection)
    with pytest.raises(TypeError, match="deferred"):
        ModelRows(Order, "o", defer=("metadata",)).insert(Order(), connection)

    def receiver(**kwargs):
        pass

    post_save.connect(receiver, sender=OrderCommand)
    try:
        with pytest.raises(TypeError, match="save signal receivers"):
            rows.insert(OrderCommand(market=market, kind=CommandKind.HALT), connection)
    finally:
        post_save.disconnect(receiver, sender=OrderCommand)

    placed = place_order(buyer, market, "BUY", "1", "100")
    # Valid in every column but one: the same client order id as a live order's.
    duplicate = OrderFactory.build(
        account=buyer, market=market, client_order_id=placed.client_order_id
    )
    with (
        pytest.raises(IntegrityError, match="order_unique_client_order_id"),
        transaction.atomic(),
    ):
        ModelRows(Order, "o").insert(duplicate, connection)


@pytest.mark.django_db
def test_fetch_one_caches_the_related_rows_its_select_carries(market, django_assert_num_queries):
    base, quote = market.base.symbol, market.quote.symbol
    with django_assert_num_queries(1):  # the market and both assets, one statement
        found = market_get(symbol=market.symbol)
        assert (found.base.symbol, found.quote.symbol) == (base, quote)
    assert state(found)["values"] == state(Market.objects.get(pk=market.pk))["values"]
    assert state(found)["cached"] == ["base", "quote"]
    assert market_get(symbol="NOPE-USDC") is None
