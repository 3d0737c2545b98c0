"""Positions: average cost, realized P&L net of fees, moved by settled trades in the
settling transaction (the matcher's batch) — and the identity that makes the
accounting exact: realized + unrealized P&L is the change in portfolio value net of
deposits and withdrawals."""

from decimal import Decimal

import pgtrigger
import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.matcher.market import MarketMatcher
from exchange.models import Trade
from portfolio.models import Position, TradingStats
from portfolio.reconciliation import ledger_check
from portfolio.selectors import portfolio_valuation
from portfolio.services.positions import PRECISION, PositionState
from tests.factories import AccountFactory, place_order
from tests.portfolio import sim

D = Decimal


def _run(steps) -> tuple[PositionState, list[Decimal]]:
    from decimal import localcontext

    position = PositionState()
    booked = []
    with localcontext(prec=PRECISION):
        for side, quantity, price, fee in steps:
            quantity, price, fee = D(quantity), D(price), D(fee)
            booked.append(
                position.trade(
                    side=side, quantity=quantity, price=price, notional=price * quantity, fee=fee
                )
            )
    return position, booked


# side, quantity, price, fee (quote) per step; then the position after the last step:
# quantity, cost basis, average entry price, realized P&L (net), fees paid, excess sold.
CASES = {
    "one buy": (
        [("BUY", "2", "100", "0")],
        ("2", "200", "100", "0", "0", "0"),
    ),
    "two buys average their cost": (
        [("BUY", "1", "100", "0"), ("BUY", "3", "120", "0")],
        ("4", "460", "115", "0", "0", "0"),
    ),
    "a partial sell realizes against the average and keeps it": (
        [("BUY", "1", "100", "0"), ("BUY", "3", "120", "0"), ("SELL", "2", "130", "0")],
        ("2", "230", "115", "30", "0", "0"),
    ),
    "a losing partial sell": (
        [("BUY", "4", "50", "0"), ("SELL", "1", "40", "0")],
        ("3", "150", "50", "-10", "0", "0"),
    ),
    "a full exit releases the whole basis": (
        [("BUY", "1", "100", "0"), ("BUY", "2", "110", "0"), ("SELL", "3", "90", "0")],
        ("0", "0", "0", "-50", "0", "0"),
    ),
    "a re-entry starts a fresh average": (
        [
            ("BUY", "2", "100", "0"),
            ("SELL", "2", "150", "0"),
            ("BUY", "1", "80", "0"),
            ("BUY", "1", "90", "0"),
        ],
        ("2", "170", "85", "100", "0", "0"),
    ),
    "fees stay out of the basis and come off realized P&L": (
        [("BUY", "2", "100", "0.1"), ("SELL", "1", "110", "0.055")],
        ("1", "100", "100", "9.845", "0.155", "0"),
    ),
    "a maker rebate adds to realized P&L": (
        [("BUY", "1", "100", "-0.01"), ("SELL", "1", "100", "0.05")],
        ("0", "0", "0", "-0.04", "0.04", "0"),
    ),
    "a sale of deposited inventory realizes only the fee": (
        [("SELL", "2", "100", "0.1")],
        ("0", "0", "0", "-0.1", "0.1", "2"),
    ),
    "a sale beyond the position closes it, the rest at no gain": (
        [("BUY", "1", "100", "0"), ("SELL", "3", "120", "0")],
        ("0", "0", "0", "20", "0", "2"),
    ),
    "a basis that does not divide evenly keeps what a sale does not release": (
        [("BUY", "3", "100", "0"), ("BUY", "0.00000001", "1", "0"), ("SELL", "1", "100", "0")],
        ("2.00000001", "200.00000034", "99.99999967", "0.00000033", "0", "0"),
    ),
}


@pytest.mark.parametrize(("steps", "expected"), CASES.values(), ids=CASES.keys())
def test_average_cost_and_realized_pnl(steps, expected):
    position, booked = _run(steps)
    quantity, cost, average, realized, fees, excess = map(D, expected)
    assert position.quantity == quantity
    assert position.cost_basis == cost
    assert position.average_entry_price == average
    assert position.realized_pnl == realized
    assert position.fees_paid == fees
    assert position.excess_sold == excess
    assert position.trade_count == len(steps)
    assert sum(booked) == position.realized_pnl


def test_a_rounded_release_keeps_realized_plus_basis_exact():
    # 1/3 of a basis of 100: the release rounds, and what it does not release stays.
    position, _ = _run(
        [("BUY", "3", "33.33333334", "0"), ("SELL", "1", "40", "0"), ("SELL", "2", "40", "0")]
    )
    assert position.quantity == 0
    assert position.cost_basis == 0
    assert position.realized_pnl == D(120) - D("100.00000002")


# --- the identity, over random trade sequences --------------------------------------

prices = st.decimals(min_value=D("0.01"), max_value=D(5000), places=2)
quantities = st.decimals(min_value=D("0.001"), max_value=D(50), places=3)
rates = st.sampled_from([D(0), D("0.0005"), D("0.001"), D("-0.0001")])


@st.composite
def trade_sequences(draw):
    """Random buys, sells (never more than held: the trader deposits only quote) and
    quote deposits and withdrawals, each trade with its fee in quote."""
    held = D(0)
    steps = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["BUY", "SELL", "DEPOSIT", "WITHDRAW"]))
        if kind in ("DEPOSIT", "WITHDRAW"):
            steps.append((kind, draw(st.decimals(min_value=1, max_value=10_000, places=2))))
            continue
        if kind == "SELL" and not held:
            kind = "BUY"
        quantity = draw(quantities)
        if kind == "SELL":
            quantity = min(quantity, held) if draw(st.booleans()) else held
        price = draw(prices)
        fee = (price * quantity * draw(rates)).quantize(D("0.00000001"))
        held += quantity if kind == "BUY" else -quantity
        steps.append((kind, quantity, price, fee))
    return steps, draw(prices)


@settings(max_examples=400, deadline=None)
@given(trade_sequences())
def test_realized_plus_unrealized_is_the_change_in_value_net_of_flows(drawn):
    from decimal import localcontext

    steps, mark = drawn
    position = PositionState()
    cash, base, flows = D(0), D(0), D(0)  # quote balance, base balance, net deposits
    with localcontext(prec=PRECISION):
        for step in steps:
            if step[0] in ("DEPOSIT", "WITHDRAW"):
                amount = step[1] if step[0] == "DEPOSIT" else -step[1]
                cash += amount
                flows += amount
                continue
            side, quantity, price, fee = step
            notional = price * quantity
            position.trade(side=side, quantity=quantity, price=price, notional=notional, fee=fee)
            sign = 1 if side == "BUY" else -1
            base += sign * quantity
            cash -= sign * notional + fee
        value = cash + base * mark  # started at zero
        unrealized = position.quantity * mark - position.cost_basis
    assert position.quantity == base
    assert position.realized_pnl + unrealized == value - flows
    assert position.cost_basis >= 0


# --- through the database -----------------------------------------------------------


@pytest.fixture(autouse=True)
def books_are_right_after_each_test(request):
    uses_db = "db" in request.fixturenames
    if uses_db:
        request.getfixturevalue("db")  # torn down after this check, not before
    yield
    if uses_db:
        assert ledger_check() == []


def test_settling_a_trade_moves_both_positions_once(market, buyer, seller, db):
    ask = sim.place(seller, market, "SELL", "2", "100")
    bid = sim.place(buyer, market, "BUY", "2", "100", accept=False)
    trade = sim.fill_and_settle(ask, bid, "2")
    from portfolio.services.ledger import trade_settle

    assert trade_settle(trade=trade) is None  # already settled: nothing moves twice

    bought = Position.objects.get(account=buyer)
    assert (bought.asset_id, bought.quote_id) == (market.base_id, market.quote_id)
    assert (bought.quantity, bought.cost_basis, bought.average_entry_price) == (
        D(2),
        D(200),
        D(100),
    )
    assert (bought.fees_paid, bought.realized_pnl, bought.trade_count) == (
        D("0.1"),
        D("-0.1"),
        1,
    )
    sold = Position.objects.get(account=seller)
    # The seller's ETH came by deposit: sold beyond the position, at no gain or loss.
    assert (sold.quantity, sold.excess_sold, sold.realized_pnl) == (D(0), D(2), D("-0.04"))


def test_a_matcher_batch_moves_positions_and_stats_in_its_transaction(market, buyer, seller, db):
    matcher = MarketMatcher(market)
    place_order(seller, market, "SELL", "2", "100")
    place_order(seller, market, "SELL", "1", "102")
    matcher.run_batch()
    place_order(buyer, market, "BUY", "3", "102")
    matcher.run_batch()
    position = Position.objects.get(account=buyer)
    assert (position.quantity, position.cost_basis) == (D(3), D(302))
    assert position.average_entry_price == D("100.66666667")
    assert position.trade_count == 2
    stats = TradingStats.objects.get(account=buyer)
    assert (stats.buy_volume, stats.buy_quote_volume, stats.taker_count) == (D(3), D(302), 2)
    assert Trade.objects.count() == 2


def test_a_batch_that_fails_before_commit_moves_no_position(market, buyer, seller, monkeypatch, db):
    from exchange.matcher import market as matcher_module

    matcher = MarketMatcher(market)
    place_order(seller, market, "SELL", "1", "100")
    place_order(buyer, market, "BUY", "1", "100")
    original = matcher_module._commands_done

    def fail_once(commands):
        monkeypatch.setattr(matcher_module, "_commands_done", original)
        # The positions and stats have been written by now, in this transaction.
        assert Position.objects.filter(account=buyer).exists()
        raise RuntimeError("the matcher died before COMMIT")

    monkeypatch.setattr(matcher_module, "_commands_done", fail_once)
    with pytest.raises(RuntimeError):
        matcher.run_batch()
    assert not Position.objects.exists()
    assert not TradingStats.objects.exists()

    matcher.run_batch()  # after a failed batch its commands run one at a time
    matcher.run_batch()
    assert Position.objects.get(account=buyer).quantity == D(1)
    assert TradingStats.objects.filter(account__in=[buyer, seller]).count() == 2


def test_valuation_marks_positions_at_the_last_trade_price(market, buyer, seller, db):
    matcher = MarketMatcher(market)
    place_order(seller, market, "SELL", "2", "100")
    place_order(buyer, market, "BUY", "2", "100")
    matcher.run_batch()
    place_order(seller, market, "SELL", "1", "110")
    matcher.run_batch()
    place_order(buyer, market, "BUY", "1", "110")  # the last trade: the mark is 110
    matcher.run_batch()

    valuation = portfolio_valuation(account=buyer)
    base = next(a for a in valuation.assets if a.asset_id == market.base_id)
    quote = next(a for a in valuation.assets if a.asset_id == market.quote_id)
    assert base.mark == D(110)
    assert quote.mark == D(1)
    assert base.quantity == base.position_quantity == D(3)
    assert base.cost_basis == D(310)
    assert base.unrealized_pnl == D(330) - D(310)
    totals = valuation.totals[market.quote_id]
    assert totals.value == quote.quantity + D(330)
    assert totals.fees_paid == D("0.1") + D("0.055")
    # Net of the 10,000 USDC deposited, the change in value is realized + unrealized.
    assert totals.value - D(10000) == totals.realized_pnl + totals.unrealized_pnl


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["BUY", "SELL"]),
            st.integers(1, 400).map(lambda n: D(n) / 100),
            st.integers(9000, 11000).map(lambda n: D(n) / 100),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_the_identity_holds_through_settlement_and_valuation(market, db, steps):
    """Through the ledger, the settlement path and the valuation selector: the trader
    deposits quote only, so every base unit came from a trade. Each example trades
    between traders of its own."""
    trader = AccountFactory(kyc_tier=1)
    sim.deposit(trader, market.quote, "100000")
    counterparty = AccountFactory(kyc_tier=1)
    sim.deposit(counterparty, market.quote, "100000")
    sim.deposit(counterparty, market.base, "100")
    for side, quantity, price in steps:
        if side == "SELL":
            quantity = min(quantity, sim.balance(trader, market.base)[0])
            if not quantity:
                continue
        other = "SELL" if side == "BUY" else "BUY"
        maker = sim.place(counterparty, market, other, quantity, price)
        taker = sim.place(trader, market, side, quantity, price, accept=False)
        sim.fill_and_settle(maker, taker, quantity)
    valuation = portfolio_valuation(account=trader)
    totals = valuation.totals[market.quote_id]
    assert totals.value - D(100000) == totals.realized_pnl + totals.unrealized_pnl
    assert ledger_check() == []


# --- the database's own rules -------------------------------------------------------


@pytest.mark.parametrize(
    "assignment",
    [
        "quantity = -1",
        "cost_basis = -1",
        "average_entry_price = -1",
        "quantity = 0",  # flat with a cost
    ],
)
def test_position_constraints(market, buyer, seller, db, assignment):
    ask = sim.place(seller, market, "SELL", "1", "100")
    bid = sim.place(buyer, market, "BUY", "1", "100", accept=False)
    sim.fill_and_settle(ask, bid, "1")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE portfolio_position SET {assignment} WHERE account_id = %s", [buyer.pk]
        )


def test_one_position_per_account_asset_and_quote(market, buyer, db):
    Position.objects.create(account=buyer, asset=market.base, quote=market.quote)
    with pytest.raises(IntegrityError), transaction.atomic():
        Position.objects.create(account=buyer, asset=market.base, quote=market.quote)


def test_positions_are_not_deleted_nor_re_keyed(market, buyer, other_trader, db):
    position = Position.objects.create(account=buyer, asset=market.base, quote=market.quote)
    with pytest.raises(DatabaseError), transaction.atomic():
        Position.objects.filter(pk=position.pk).delete()
    with pytest.raises(DatabaseError), transaction.atomic():
        Position.objects.filter(pk=position.pk).update(account=other_trader)


def test_ledger_check_finds_a_position_that_is_not_its_trades(market, buyer, seller, db):
    ask = sim.place(seller, market, "SELL", "1", "100")
    bid = sim.place(buyer, market, "BUY", "1", "100", accept=False)
    sim.fill_and_settle(ask, bid, "1")
    Position.objects.filter(account=buyer).update(quantity=D(2), average_entry_price=D(50))
    problems = [str(p) for p in ledger_check()]
    assert any("position is not its trades" in p for p in problems)
    Position.objects.filter(account=buyer).update(quantity=D(1), average_entry_price=D(100))


def test_ledger_check_finds_a_position_in_no_market(market, buyer, db):
    # Positions are kept per (asset, quote) of a market: this pair is no market's.
    position = Position.objects.create(
        account=buyer, asset=market.quote, quote=market.base, quantity=D(5), trade_count=3
    )
    problems = [str(p) for p in ledger_check()]
    assert problems == [
        f"position is in no market: account {buyer.pk} asset {position.asset_id} quote "
        f"{position.quote_id} (5.00000000 net over 3 trades)"
    ]
    with pgtrigger.ignore("portfolio.Position:protect_delete"):  # the books right again
        position.delete()
