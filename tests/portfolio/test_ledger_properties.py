"""Random interleavings of everything that moves money — deposits, orders with holds,
fills and their settlement, cancels, market buys by quote amount, withdrawals through
each of their outcomes — and after every step: ``ledger_check`` finds nothing, no
balance is negative, and what is on the books is exactly what came in minus what
went out."""

import itertools
from decimal import Decimal

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from exchange.models import OrderType, Side
from portfolio.models import Balance, LedgerAccount, LedgerAccountKind
from portfolio.reconciliation import ledger_check
from portfolio.services.ledger import InsufficientFunds
from portfolio.services.vault import (
    withdrawal_approve,
    withdrawal_complete,
    withdrawal_fail,
    withdrawal_process,
    withdrawal_reject,
    withdrawal_request,
)
from tests.factories import AccountFactory, AssetFactory, MarketFactory, random_hex
from tests.portfolio import sim

D = Decimal
_symbols = itertools.count()

prices = st.integers(min_value=9_000, max_value=11_000).map(lambda t: D(t) / 100)
quantities = st.integers(min_value=1, max_value=3_000).map(lambda n: D(n) / 1000)
amounts = st.integers(min_value=1, max_value=5_000_000).map(lambda n: D(n) / 1000)


class MoneyMachine(RuleBasedStateMachine):
    orders = Bundle("orders")
    withdrawals = Bundle("withdrawals")

    @initialize()
    def open_market(self):
        # Each example runs in its own savepoint, rolled back in teardown, so the checks
        # after every step read only this example's books.
        self.savepoint = transaction.savepoint()
        n = next(_symbols)
        self.base = AssetFactory(symbol=f"B{n}")
        self.quote = AssetFactory(symbol=f"Q{n}")
        self.market = MarketFactory(
            base=self.base,
            quote=self.quote,
            maker_fee_rate=D("-0.0001") if n % 2 else D("0.0002"),
            taker_fee_rate=D("0.0007"),
        )
        self.traders = AccountFactory.create_batch(3)
        self.came_in = {self.base.pk: D(0), self.quote.pk: D(0)}
        self.went_out = {self.base.pk: D(0), self.quote.pk: D(0)}
        for trader in self.traders:  # enough to trade from the first step
            self.deposit(self.traders.index(trader), True, D(50))
            self.deposit(self.traders.index(trader), False, D(10_000))
        from django.contrib.auth import get_user_model

        self.staff = get_user_model().objects.create_user(f"staff-{n}", is_staff=True)

    def _asset(self, is_base: bool):
        return self.base if is_base else self.quote

    @rule(trader=st.integers(0, 2), is_base=st.booleans(), amount=amounts)
    def deposit(self, trader, is_base, amount):
        asset = self._asset(is_base)
        sim.deposit(self.traders[trader], asset, amount)
        self.came_in[asset.pk] += amount

    @rule(
        target=orders,
        trader=st.integers(0, 2),
        side=st.sampled_from(Side.values),
        price=prices,
        quantity=quantities,
    )
    def place(self, trader, side, price, quantity):
        try:
            return sim.place(self.traders[trader], self.market, side, quantity, price)
        except InsufficientFunds:
            return multiple()

    @rule(
        maker=consumes(orders),
        trader=st.integers(0, 2),
        share=st.integers(1, 100),
        improve=st.integers(0, 50),
    )
    def take(self, maker, trader, share, improve):
        """Another trader's order crosses ``maker`` at a price as good or better than
        the maker's, and fills ``share``% of it (at least one lot)."""
        maker.refresh_from_db()
        if maker.is_terminal or maker.account == self.traders[trader]:
            return
        quantity = max(D("0.001"), (maker.remaining * share / 100).quantize(D("0.001")))
        quantity = min(quantity, maker.remaining)
        tick = D("0.01") * improve
        side = Side.SELL if maker.side == Side.BUY else Side.BUY
        limit = maker.price + tick if side == Side.BUY else max(D("0.01"), maker.price - tick)
        try:
            taker = sim.place(
                self.traders[trader], self.market, side, quantity, limit, accept=False
            )
        except InsufficientFunds:
            return
        sim.fill_and_settle(maker, taker, quantity)

    @rule(maker=consumes(orders), trader=st.integers(0, 2), budget=amounts)
    def market_buy(self, maker, trader, budget):
        """A market buy by quote amount sweeps a resting ask, then its remainder ends."""
        maker.refresh_from_db()
        if maker.is_terminal or maker.side != Side.SELL:
            return
        buyer = self.traders[trader]
        if maker.account == buyer:
            return
        try:
            order = sim.place(
                buyer, self.market, Side.BUY, None, type=OrderType.MARKET, quote_quantity=budget
            )
        except InsufficientFunds:
            return
        maker.refresh_from_db()
        affordable = (budget / (maker.price * (1 + order.taker_fee_rate))).quantize(
            D("0.001"), rounding="ROUND_DOWN"
        )
        quantity = min(affordable, maker.remaining)
        if quantity > 0:
            sim.fill_and_settle(maker, order, quantity)
        sim.cancel(order)

    @rule(order=consumes(orders), expire=st.booleans())
    def cancel(self, order, expire):
        order.refresh_from_db()
        sim.cancel(order, status="EXPIRED" if expire else "CANCELLED")

    @rule(
        target=withdrawals,
        trader=st.integers(0, 2),
        is_base=st.booleans(),
        share=st.integers(1, 30),
    )
    def withdraw(self, trader, is_base, share):
        asset = self._asset(is_base)
        row = Balance.objects.filter(account=self.traders[trader], asset=asset).first()
        if row is None or row.available <= 0:
            return multiple()
        amount = max(D("0.00000001"), (row.available * share / 100).quantize(D("0.00000001")))
        return withdrawal_request(
            account=self.traders[trader],
            asset=asset,
            amount=amount,
            destination_address="0x" + "cd" * 20,
            idempotency_key=random_hex(8),
        )

    @rule(withdrawal=consumes(withdrawals), outcome=st.sampled_from(["complete", "reject", "fail"]))
    def finish_withdrawal(self, withdrawal, outcome):
        if outcome == "reject":
            withdrawal_reject(withdrawal=withdrawal, rejected_by=self.staff, reason="review")
            return
        withdrawal_approve(withdrawal=withdrawal, approved_by=self.staff)
        withdrawal_process(withdrawal=withdrawal)
        if outcome == "fail":
            withdrawal_fail(withdrawal=withdrawal, reason="reverted")
        else:
            withdrawal_complete(withdrawal=withdrawal, tx_hash=random_hex(32), block_number=1)
            self.went_out[withdrawal.asset_id] += withdrawal.amount

    def teardown(self):
        if hasattr(self, "savepoint"):
            with connection.cursor() as cursor:
                # Fire the deferred "postings balance" triggers now, as a commit would.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")
            transaction.savepoint_rollback(self.savepoint)

    @precondition(lambda self: hasattr(self, "market"))
    @invariant()
    def books_are_sound(self):
        assert ledger_check() == []

    @precondition(lambda self: hasattr(self, "market"))
    @invariant()
    def money_is_conserved(self):
        for asset_id in (self.base.pk, self.quote.pk):
            on_books = sum(
                LedgerAccount.objects.filter(asset_id=asset_id)
                .exclude(kind=LedgerAccountKind.VAULT)
                .values_list("balance", flat=True),
                D(0),
            )
            assert on_books == self.came_in[asset_id] - self.went_out[asset_id]
            assert not LedgerAccount.objects.filter(
                asset_id=asset_id, kind__in=["AVAILABLE", "HELD", "FEE_REVENUE"], balance__lt=0
            ).exists()


@pytest.mark.django_db
def test_money_is_never_created_lost_or_left_locked():
    run_state_machine_as_test(
        MoneyMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
