"""PostgreSQL row-level security behind the trader API: under the API's role with an
account's id set, a query with no filter at all returns that account's rows only."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import ProgrammingError, connection, transaction
from django.utils import timezone
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from dex.api.authentication import ALL_SCOPES, Trader
from dex.api.rls import RowLevelSecurityMixin, rls_scope
from dex.api.scoping import for_account
from exchange.models import (
    Account,
    ApiKey,
    Order,
    OrderArchive,
    OrderStatus,
    OrderStatusHistory,
    Side,
    Trade,
)
from exchange.services.archiving import orders_archive
from portfolio.models import Balance, LedgerAccount, LedgerTransaction, Posting, VaultOperation
from tests.factories import AccountFactory, random_hex
from tests.portfolio import sim


def _scoped(model):
    return lambda account: for_account(model.objects.all(), account)


# Each protected table or view, and the rows of it an account owns, as the ORM finds
# them as the tables' owner.
OWN_ROWS = {
    "exchange_order": _scoped(Order),
    "exchange_orderarchive": _scoped(OrderArchive),
    "exchange_trade": _scoped(Trade),
    "portfolio_ledgeraccount": _scoped(LedgerAccount),
    "portfolio_posting": _scoped(Posting),
    "portfolio_balance": _scoped(Balance),
    "portfolio_vaultoperation": _scoped(VaultOperation),
    "exchange_account": lambda account: Account.objects.filter(pk=account.pk),
    "exchange_apikey": lambda account: ApiKey.objects.filter(account=account),
    "exchange_orderstatushistory": lambda account: OrderStatusHistory.objects.filter(
        order__account=account
    ),
    "portfolio_ledgertransaction": lambda account: LedgerTransaction.objects.filter(
        postings__ledger_account__owner=account
    ).distinct(),
}


@pytest.fixture
def accounts(market):
    """A, B and C, each with deposits, an API key, orders and trades: A buys from B, B
    sells to C, and A buys from C."""
    a, b, c = (AccountFactory(label=label) for label in "ABC")
    sim.deposit(a, market.quote, "10000")
    sim.deposit(b, market.base, "10")
    sim.deposit(c, market.base, "10")
    sim.deposit(c, market.quote, "10000")
    for account in (a, b, c):
        ApiKey.objects.create(
            account=account,
            name="bot",
            prefix=random_hex(8)[2:],
            key_hash=random_hex(32)[2:],
            scopes=["read"],
        )
    for maker, taker in ((b, a), (b, c), (c, a)):
        ask = sim.place(maker, market, Side.SELL, "1.000", "2000.00")
        bid = sim.place(taker, market, Side.BUY, "1.000", "2000.00", accept=False)
        sim.fill_and_settle(ask, bid, "1.000")
    sim.place(a, market, Side.BUY, "0.500", "1900.00")  # one left open on the book
    # One filled order of each account finished long ago and moved to the archive: B's
    # and A's of the first trade, C's of the second.
    long_ago = timezone.now() - timedelta(days=400)
    filled = list(Order.objects.filter(status=OrderStatus.FILLED).order_by("pk"))
    for order in (filled[0], filled[1], filled[3]):
        sim.backdate(order, long_ago)
    assert orders_archive(done_before=long_ago + timedelta(days=1), limit=10) == 3
    return a, b, c


def _ids(table: str) -> set:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")  # no WHERE: the policies do the work
        names = [col.name for col in cursor.description]
        column = names.index("id" if "id" in names else "order_id")
        return {row[column] for row in cursor.fetchall()}


def _who() -> tuple[str, str | None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, current_setting('dex.account_id', true)")
        return cursor.fetchone()


@contextmanager
def _api_role():
    """The API's role with no account set (``rls_scope`` always sets one)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('role', %s, true)", [settings.API_DB_ROLE])
        yield cursor
        cursor.execute("SELECT set_config('role', 'none', true)")


@pytest.mark.parametrize("table", OWN_ROWS)
def test_a_raw_select_under_the_api_role_returns_only_the_accounts_rows(accounts, table):
    every_row = _ids(table)
    for account in accounts:
        own = {row.pk for row in OWN_ROWS[table](account)}
        assert own, f"the fixture gives {account.label} no {table} rows"
        assert own < every_row, f"{account.label} owns every {table} row: nothing is proven"
        with rls_scope(account.pk):
            assert _ids(table) == own


def test_an_account_sees_the_trades_it_bought_or_sold(accounts):
    a, b, c = accounts
    with rls_scope(a.pk):
        assert set(Trade.objects.values_list("buyer_id", "seller_id")) == {
            (a.pk, b.pk),
            (a.pk, c.pk),
        }
    with rls_scope(b.pk):
        assert set(Trade.objects.values_list("buyer_id", "seller_id")) == {
            (a.pk, b.pk),
            (c.pk, b.pk),
        }


def test_the_counterparty_stays_hidden_even_through_a_join(accounts):
    a = accounts[0]
    with rls_scope(a.pk):
        # An inner join to the other side's account or order finds no row, so it
        # drops the trade: read buyer_id/seller_id instead.
        assert list(Trade.objects.select_related("buyer", "seller")) == []
        assert list(Trade.objects.select_related("maker_order")) == []
        assert len(Trade.objects.select_related("market")) == 2


def test_venue_ledger_accounts_are_seen_by_no_trader(accounts):
    venue = set(LedgerAccount.objects.filter(owner=None).values_list("pk", flat=True))
    assert venue
    with rls_scope(accounts[0].pk):
        assert not venue & _ids("portfolio_ledgeraccount")


@pytest.mark.parametrize("setting", [None, ""])
@pytest.mark.parametrize("table", OWN_ROWS)
def test_with_no_account_set_the_api_role_sees_no_rows(accounts, table, setting):
    with _api_role() as cursor:
        if setting is not None:
            cursor.execute("SELECT set_config('dex.account_id', %s, true)", [setting])
        assert _ids(table) == set()


@pytest.mark.django_db(transaction=True)
def test_a_session_that_never_set_the_account_sees_no_rows(market):
    sim.deposit(AccountFactory(), market.quote, "100")
    connection.close()  # a fresh session, where dex.account_id was never defined
    with _api_role() as cursor:
        cursor.execute("SELECT current_setting('dex.account_id', true)")
        assert cursor.fetchone() == (None,)
        for table in OWN_ROWS:
            assert _ids(table) == set(), table


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO exchange_order DEFAULT VALUES",
        "UPDATE exchange_order SET reason = 'x'",
        "DELETE FROM exchange_trade",
        "UPDATE portfolio_ledgeraccount SET balance = 0",
        "INSERT INTO portfolio_posting DEFAULT VALUES",
        "DELETE FROM portfolio_vaultoperation",
        "UPDATE exchange_account SET label = 'x'",
        "TRUNCATE exchange_order",
        # Tables no trader endpoint reads are not granted at all.
        "SELECT * FROM exchange_ordercommand",
        "SELECT * FROM portfolio_ledgeradjustment",
    ],
)
def test_the_api_role_may_only_read_what_it_was_granted(accounts, statement):
    with (
        pytest.raises(ProgrammingError, match="permission denied"),
        rls_scope(accounts[0].pk),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)


def test_the_owner_outside_the_scope_still_sees_every_row(accounts):
    owner = _who()[0]
    before = {table: _ids(table) for table in OWN_ROWS}
    with rls_scope(accounts[0].pk):
        assert _who() == (settings.API_DB_ROLE, str(accounts[0].pk))
    assert _who() == (owner, "")
    for table, rows in before.items():
        assert _ids(table) == rows
    assert len(before["exchange_account"]) == 3
    assert len(before["exchange_trade"]) == 3


def test_the_orm_without_a_filter_returns_only_the_callers_rows(accounts):
    models = [Order, Trade, LedgerAccount, Posting, Balance, VaultOperation]
    for account in accounts:
        own = {model: set(for_account(model.objects.all(), account)) for model in models}
        with rls_scope(account.pk):
            for model in models:
                assert set(model.objects.all()) == own[model], model.__name__
            assert list(Account.objects.all()) == [account]


def test_a_nested_scope_puts_back_the_scope_it_found(accounts):
    a, b, _ = accounts
    with rls_scope(a.pk):
        with rls_scope(b.pk):
            assert _who() == (settings.API_DB_ROLE, str(b.pk))
        assert _who() == (settings.API_DB_ROLE, str(a.pk))
        assert {o.account_id for o in Order.objects.all()} == {a.pk}


def test_a_scope_that_raises_is_rolled_back_and_leaves_nothing_behind(accounts):
    owner = _who()[0]
    with pytest.raises(ZeroDivisionError), rls_scope(accounts[0].pk):
        1 / 0  # noqa: B018
    assert _who() == (owner, "")


@pytest.mark.django_db(transaction=True)
def test_an_outermost_scope_is_its_own_transaction(market):
    account = AccountFactory()
    sim.deposit(account, market.quote, "100")
    owner = _who()[0]
    assert connection.get_autocommit()
    with rls_scope(account.pk):
        assert connection.in_atomic_block
        assert _who() == (settings.API_DB_ROLE, str(account.pk))
        assert [b.account_id for b in Balance.objects.all()] == [account.pk]
    assert not connection.in_atomic_block
    assert _who() == (owner, "")


# --- The DRF mixin ---------------------------------------------------------------------


class _Probe(RowLevelSecurityMixin, APIView):
    """Says who the database thinks is asking, and whose orders it sees."""

    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []

    def get(self, request):
        if "missing" in request.query_params:
            raise NotFound("no such thing")
        if "crash" in request.query_params:
            raise RuntimeError("boom")
        return self._who()

    def post(self, request):
        return self._who()

    def _who(self):
        user, account_id = _who()
        orders = sorted({o.account_id for o in Order.objects.all()})
        return Response({"user": user, "account_id": account_id, "orders": orders})


def _call(method: str, path: str = "/probe", user=None):
    request = getattr(APIRequestFactory(), method)(path)
    if user is not None:
        force_authenticate(request, user=user)
    return _Probe.as_view()(request)


def test_the_mixin_runs_a_traders_get_under_the_api_role(accounts):
    a = accounts[0]
    response = _call("get", user=Trader(a, ALL_SCOPES))
    assert response.data == {
        "user": settings.API_DB_ROLE,
        "account_id": str(a.pk),
        "orders": [a.pk],
    }


def test_the_mixin_leaves_writes_and_non_traders_to_the_owner(accounts):
    owner = _who()[0]
    every_account = sorted({o.account_id for o in Order.objects.all()})
    for response in (
        _call("post", user=Trader(accounts[0], ALL_SCOPES)),
        _call("get"),  # anonymous
    ):
        assert response.data["user"] == owner
        assert response.data["orders"] == every_account


@pytest.mark.parametrize("query", ["?missing", "?crash"])
def test_the_mixin_leaves_the_scope_when_the_handler_raises(accounts, query):
    owner = _who()[0]
    user = Trader(accounts[0], ALL_SCOPES)
    if query == "?crash":
        with pytest.raises(RuntimeError):
            _call("get", "/probe" + query, user)
    else:
        assert _call("get", "/probe" + query, user).status_code == 404
    assert _who() == (owner, "")
