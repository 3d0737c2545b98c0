"""Holds reserve an order's worst-case cost; fills move exactly what they should;
nothing is left locked when an order ends. ``ledger_check`` passes after each case."""

from decimal import Decimal

import pytest

from exchange.models import OrderStatus, OrderType, Side, Trade
from portfolio.holds import buy_hold, fee_amount, order_hold_required
from portfolio.models import LedgerAccount, LedgerAccountKind, LedgerTransaction
from portfolio.reconciliation import ledger_check
from portfolio.services.ledger import (
    InsufficientFunds,
    LedgerError,
    hold_release,
    holds_sync_many,
    order_holds,
    trade_settle,
)
from tests.factories import AccountFactory, OrderFactory
from tests.portfolio import sim

pytestmark = pytest.mark.django_db
D = Decimal


def fees(market) -> Decimal:
    account = LedgerAccount.objects.filter(kind=LedgerAccountKind.FEE_REVENUE, market=market)
    return account.get().balance if account.exists() else D(0)


@pytest.fixture(autouse=True)
def books_balance_after_each_test():
    yield
    assert ledger_check() == []


# --- the arithmetic ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notional", "rate", "fee"),
    [
        (D("100"), D("0.0005"), D("0.05")),
        (D("0.00123"), D("0.0005"), D("0.00000061")),  # 0.000000615 rounds down
        (D("0.00123"), D("-0.0002"), D("-0.00000024")),  # a rebate rounds toward zero
        (D("123.45"), D("0"), D("0")),
    ],
)
def test_fees_round_toward_zero(notional, rate, fee):
    assert fee_amount(notional, rate) == fee


def test_a_buy_reserves_its_notional_and_a_rounded_up_fee():
    assert buy_hold(D("101"), D("2"), D("0.0005")) == D("202.101")
    assert buy_hold(D("0.01"), D("0.001"), D("0.0005")) == D("0.00001001")  # 5e-9 → 1e-8


# --- holds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "kwargs", "held_quote", "held_base"),
    [
        (Side.BUY, {"quantity": "2", "price": "101"}, D("202.101"), D(0)),
        (Side.SELL, {"quantity": "2", "price": "101"}, D(0), D("2")),
        (
            Side.BUY,
            {"quantity": None, "type": OrderType.MARKET, "quote_quantity": "150"},
            D("150"),
            D(0),
        ),
        (
            Side.BUY,
            {"quantity": "1", "type": OrderType.MARKET, "protection_price": "105"},
            D("105.0525"),
            D(0),
        ),
        (Side.SELL, {"quantity": "1.5", "type": OrderType.MARKET}, D(0), D("1.5")),
    ],
)
def test_placing_an_order_holds_its_worst_case_cost(
    market, buyer, seller, side, kwargs, held_quote, held_base
):
    trader = buyer if side == Side.BUY else seller
    order = sim.place(trader, market, side, **kwargs)
    assert sim.balance(trader, market.quote)[1] == held_quote
    assert sim.balance(trader, market.base)[1] == held_base
    assert order_holds([order.pk])[order.pk] == held_quote + held_base
    assert order_hold_required(order) == held_quote + held_base


def test_an_order_the_trader_cannot_cover_is_refused_and_changes_nothing(market, buyer):
    before = sim.balance(buyer, market.quote)
    with pytest.raises(InsufficientFunds, match="insufficient USDC"):
        sim.place(buyer, market, Side.BUY, "100", "101")  # 10,100 > 10,000
    assert sim.balance(buyer, market.quote) == before
    assert not LedgerTransaction.objects.filter(kind="HOLD").exists()


def test_orders_held_together_are_checked_together(market, buyer):
    """The matcher holds for a batch at once: two orders that fit alone but not
    together are refused as one, and neither is held."""
    orders = [
        OrderFactory(
            account=buyer,
            market=market,
            quantity=D(q),
            remaining=D(q),
            taker_fee_rate=market.taker_fee_rate,
        )
        for q in ("60", "50")  # 6,003 and 5,002.5 of 10,000
    ]
    with pytest.raises(InsufficientFunds, match=r"5002\.5"):
        holds_sync_many(orders, kind="HOLD", cause="placed")
    assert sim.balance(buyer, market.quote) == (D("10000"), D(0))
    holds_sync_many(orders[:1], kind="HOLD", cause="placed")
    assert sim.balance(buyer, market.quote) == (D("3997"), D("6003"))
    for order in orders:
        sim.cancel(order)


def test_releases_of_one_call_each_name_their_own_cause(market, buyer):
    """The matcher releases a batch's finished and reduced orders in one call: the
    finished ones' moves are "final", the others' name the batch; again, nothing."""
    from django.utils import timezone

    done, reduced = (sim.place(buyer, market, Side.BUY, "10", "100") for _ in range(2))
    done.status, done.reason, done.done_at = OrderStatus.CANCELLED, "USER_CANCEL", timezone.now()
    done.sequence, done.accepted_at = done.pk, timezone.now()
    done.save()
    reduced.quantity = reduced.remaining = D("4")
    reduced.save()

    def cause(order):
        return "final" if order.is_terminal else "seq:7@1"

    posted = holds_sync_many([done, reduced], kind="RELEASE", cause=cause)
    assert sorted(t.idempotency_key for t in posted) == sorted(
        [f"order:{done.pk}:final", f"order:{reduced.pk}:seq:7@1"]
    )
    held = order_holds([done.pk, reduced.pk])
    assert (held.get(done.pk, D(0)), held[reduced.pk]) == (D(0), order_hold_required(reduced))
    assert sim.balance(buyer, market.quote)[1] == order_hold_required(reduced)
    assert holds_sync_many([done, reduced], kind="RELEASE", cause=cause) == ()
    sim.cancel(reduced)


def test_a_traders_accounts_are_locked_by_key_and_made_when_missing(market, buyer):
    """What a placement locks: the trader's available and held account in one asset,
    found by key, or created first when the trader never held that asset."""
    from django.db import transaction

    from portfolio.services.ledger import ledger_accounts_lock_keys, trader_account_key

    A, H = LedgerAccountKind.AVAILABLE, LedgerAccountKind.HELD
    quote = [trader_account_key(kind, market.quote_id, buyer.pk) for kind in (A, H)]
    base = [trader_account_key(kind, market.base_id, buyer.pk) for kind in (A, H)]
    # The buyer was funded in the quote (an available account) and never held any.
    available = LedgerAccount.objects.get(owner=buyer, asset=market.quote, kind=A)
    assert not LedgerAccount.objects.filter(owner=buyer, kind=H).exists()
    never = AccountFactory()
    fresh = [trader_account_key(kind, market.base_id, never.pk) for kind in (A, H)]
    with transaction.atomic():
        locked = ledger_accounts_lock_keys(quote)  # one found, one made
        assert sorted(locked) == sorted(quote)
        assert (locked[quote[0]].pk, locked[quote[0]].balance) == (
            available.pk,
            available.balance,
        )
        assert (locked[quote[1]].kind, locked[quote[1]].balance) == (H, 0)
        made = ledger_accounts_lock_keys(fresh)
        assert sorted(made) == sorted(fresh)
        assert all(a.balance == 0 and a.owner_id == never.pk for a in made.values())
        both = ledger_accounts_lock_keys(quote + base)  # two assets: looked up, then locked
        assert sorted(both) == sorted(quote + base)
        assert [both[k].pk for k in quote] == [locked[k].pk for k in quote]


def test_cancelling_releases_everything_held(market, buyer):
    order = sim.place(buyer, market, Side.BUY, "2", "101")
    sim.cancel(order)
    assert sim.balance(buyer, market.quote) == (D("10000"), D(0))
    sim.cancel(order)  # a retried release posts nothing more
    assert LedgerTransaction.objects.filter(order=order, kind="RELEASE").count() == 1


def test_a_live_order_cannot_be_released_without_naming_why(market, buyer):
    order = sim.place(buyer, market, Side.BUY, "2", "101")
    with pytest.raises(LedgerError, match="name the cause"):
        hold_release(order=order)


# --- settling fills ------------------------------------------------------------------


def test_a_fill_pays_the_seller_delivers_the_base_and_books_both_fees(market, buyer, seller):
    ask = sim.place(seller, market, Side.SELL, "2", "100")
    bid = sim.place(buyer, market, Side.BUY, "2", "101", accept=False)  # the taker

    sim.fill_and_settle(ask, bid, "1")  # at the maker's 100: 1 bps better than the bid

    # Buyer: the hold for 1 at 101 (101.0505) is used up: 100 to the seller, 0.05
    # fee, and the price improvement and unused fee reserve (1.0005) come back.
    assert sim.balance(buyer, market.quote) == (
        D("10000") - D("202.101") + D("1.0005"),
        D("101.0505"),
    )
    assert sim.balance(buyer, market.base) == (D("1"), D(0))
    assert sim.balance(seller, market.base) == (D("48"), D("1"))
    assert sim.balance(seller, market.quote) == (D("99.98"), D(0))  # 100 − 0.02 maker fee
    assert fees(market) == D("0.07")

    sim.fill_and_settle(ask, bid, "1")
    assert sim.balance(buyer, market.quote) == (D("10000") - D("200.1"), D(0))
    assert sim.balance(seller, market.quote) == (D("199.96"), D(0))
    assert sim.balance(seller, market.base) == (D("48"), D(0))
    assert fees(market) == D("0.14")


def test_a_resting_bid_filled_by_an_incoming_sell_pays_the_maker_rate(market, buyer, seller):
    bid = sim.place(buyer, market, Side.BUY, "1", "100")
    ask = sim.place(seller, market, Side.SELL, "1", "99", accept=False)
    sim.fill_and_settle(bid, ask, "1")  # at the bid's 100
    assert sim.balance(buyer, market.quote) == (D("10000") - D("100.02"), D(0))
    assert sim.balance(seller, market.quote) == (D("99.95"), D(0))


def test_a_maker_rebate_is_paid_out_of_the_takers_fee(base, quote, buyer, seller):
    from tests.factories import MarketFactory

    rebate_market = MarketFactory(
        base=base, quote=quote, maker_fee_rate=D("-0.0001"), taker_fee_rate=D("0.0005")
    )
    ask = sim.place(seller, rebate_market, Side.SELL, "1", "100")
    bid = sim.place(buyer, rebate_market, Side.BUY, "1", "100", accept=False)
    sim.fill_and_settle(ask, bid, "1")
    assert sim.balance(seller, quote) == (D("100.01"), D(0))
    assert fees(rebate_market) == D("0.04")


def test_a_market_buy_by_quote_amount_spends_at_most_that_amount(market, buyer, seller):
    ask_1 = sim.place(seller, market, Side.SELL, "1", "100")
    ask_2 = sim.place(seller, market, Side.SELL, "1", "101")
    order = sim.place(buyer, market, Side.BUY, None, type=OrderType.MARKET, quote_quantity="150")
    sim.fill_and_settle(ask_1, order, "1")
    sim.fill_and_settle(ask_2, order, "0.4", price="101")
    sim.cancel(order)  # the sweep ended; what it did not spend comes back
    spent = D("100") + D("0.05") + D("40.4") + fee_amount(D("40.4"), D("0.0005"))
    assert sim.balance(buyer, market.quote) == (D("10000") - spent, D(0))
    assert sim.balance(buyer, market.base) == (D("1.4"), D(0))


def test_a_market_buy_by_quantity_is_held_at_its_protection_price(market, buyer, seller):
    ask = sim.place(seller, market, Side.SELL, "1", "100")
    order = sim.place(buyer, market, Side.BUY, "1", type=OrderType.MARKET, protection_price="105")
    sim.fill_and_settle(ask, order, "1")
    assert order.status == OrderStatus.FILLED
    assert sim.balance(buyer, market.quote) == (D("10000") - D("100.05"), D(0))


def test_settling_the_same_fill_twice_posts_once(market, buyer, seller):
    ask = sim.place(seller, market, Side.SELL, "1", "100")
    bid = sim.place(buyer, market, Side.BUY, "1", "100", accept=False)
    trade = sim.fill_and_settle(ask, bid, "1")
    before = sim.balance(buyer, market.quote), sim.balance(seller, market.quote), fees(market)
    assert trade_settle(trade=trade) is None
    assert (
        sim.balance(buyer, market.quote),
        sim.balance(seller, market.quote),
        fees(market),
    ) == before
    assert LedgerTransaction.objects.filter(trade=trade).count() == 1
    trade.refresh_from_db()
    assert trade.settlement_status == "SETTLED"


def test_many_partial_fills_never_exhaust_the_fee_reserve(market, buyer):
    """Thirty fills of 0.001 at a price whose fee is fractional each time: every fee
    rounds down and the reserve rounded up, so the hold always suffices and ends at 0."""
    sellers = AccountFactory.create_batch(3)
    for account in sellers:
        sim.deposit(account, market.base, "1")
    bid = sim.place(buyer, market, Side.BUY, "0.03", "33.33")
    for i in range(30):
        ask = sim.place(sellers[i % 3], market, Side.SELL, "0.001", "33.33", accept=False)
        sim.fill_and_settle(bid, ask, "0.001")
    bid.refresh_from_db()
    assert bid.status == OrderStatus.FILLED
    assert sim.balance(buyer, market.quote)[1] == D(0)
    maker_fees = sum(t.maker_fee for t in Trade.objects.filter(maker_order=bid))
    assert sim.balance(buyer, market.quote)[0] == D("10000") - D("0.9999") - maker_fees
