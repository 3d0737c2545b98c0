"""Many writers on the same ledger accounts at once, each thread on its own PostgreSQL
connection: orders are placed (holds), filled against each other and settled (one by
one and in batches), cancelled (releases), and money is deposited and withdrawn. The
account locks are taken in primary-key order, so the writers queue and never
deadlock; the balances come out exactly as the work done says they must."""

from __future__ import annotations

import random
import threading
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from django.db import connection, transaction
from psycopg import errors as pg_errors

from exchange.models import Market, Order, OrderStatus, SettlementStatus, Side, Trade
from portfolio.models import (
    LedgerAccount,
    LedgerAccountKind,
    LedgerTransaction,
    TransactionKind,
    WithdrawalLimit,
)
from portfolio.reconciliation import ledger_check
from portfolio.services.ledger import trade_settle, trade_settle_many, trades_for_settlement
from portfolio.services.vault import withdrawal_complete, withdrawal_fail, withdrawal_process
from portfolio.services.vault import withdrawal_request as vault_withdrawal_request
from tests.factories import AccountFactory, AssetFactory, MarketFactory, random_hex
from tests.portfolio import sim

D = Decimal
THREADS = 8
ROUNDS = 12  # per thread
TRADERS = 4
JOIN_TIMEOUT = 90  # seconds; PostgreSQL reports a deadlock after deadlock_timeout (1 s)
# Each trader starts with more than every thread together could spend or sell
# (THREADS × ROUNDS orders of at most 1 base at ≤ 100.50, withdrawals of 2), so no
# order or withdrawal can be refused for lack of funds: any exception is a failure.
OPENING = {"USDC": D("100000"), "ETH": D("1000"), "BTC": D("1000")}
DEPOSIT, WITHDRAWAL = D("25"), D("2")


@dataclass
class Work:
    """What one thread did, to compute afterwards what the books must say."""

    trade_ids: list[int] = field(default_factory=list)
    deposited: Counter = field(default_factory=Counter)  # (account, asset) → amount
    withdrawn: Counter = field(default_factory=Counter)
    pending_withdrawals: Counter = field(default_factory=Counter)


def run_threads(count: int, body: Callable[[int, threading.Barrier], None]) -> list[str]:
    """Run ``body(index, barrier)`` on ``count`` threads, each with its own database
    connection; return the errors (with tracebacks) they raised."""
    barrier = threading.Barrier(count)
    errors: list[str] = []

    def target(index: int) -> None:
        try:
            body(index, barrier)
        except Exception as exc:
            cause = exc.__cause__ or exc
            kind = "DEADLOCK" if isinstance(cause, pg_errors.DeadlockDetected) else "error"
            errors.append(f"thread {index}: {kind}: {traceback.format_exc()}")
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    hung = [i for i, thread in enumerate(threads) if thread.is_alive()]
    assert not hung, f"threads {hung} still running after {JOIN_TIMEOUT}s: a hang, not a queue"
    return errors


@transaction.atomic
def fill_in_sequence(maker: Order, taker: Order, quantity: str) -> Trade:
    """``sim.fill`` numbers the trade MAX(sequence) + 1 for its market, which two threads
    filling in one market would both read. In production one matcher per market writes
    its trades, so nothing races; here the market row's lock stands in for it. A row
    lock rather than a threading.Lock: PostgreSQL then sees every wait, so a cycle
    through it would be reported as a deadlock instead of hanging the test. NO KEY
    UPDATE, so that it does not block orders being inserted into the market (their
    foreign-key check takes KEY SHARE on the row)."""
    Market.objects.select_for_update(no_key=True).get(pk=maker.market_id)
    return sim.fill(maker, taker, quantity)


def withdrawal_request(account, asset, amount: Decimal):
    return vault_withdrawal_request(
        account=account,
        asset=asset,
        amount=amount,
        destination_address=random_hex(20),
        idempotency_key=random_hex(8),
    )


@pytest.fixture
def markets(market, quote) -> list[Market]:
    """ETH-USDC and BTC-USDC: every buy and every fill of both touches USDC accounts."""
    return [market, MarketFactory(base=AssetFactory(symbol="BTC"), quote=quote)]


@pytest.fixture
def traders(markets):
    assets = [markets[0].quote, *(m.base for m in markets)]
    for asset in assets:
        WithdrawalLimit.objects.create(kyc_tier=1, asset=asset, auto_approve_max=D("1000"))
    accounts = AccountFactory.create_batch(TRADERS, kyc_tier=1)
    for account in accounts:
        for asset in assets:
            sim.deposit(account, asset, OPENING[asset.symbol])
    return accounts


# Partial fills leave a remainder that the cancel releases; full ones leave nothing.
FILLS = [("0.4", "0.6"), ("0.4", "0.35"), ("1", None), ("0.25", "0.25")]


def trade_round(rng: random.Random, markets, traders, work: Work, round_: int) -> None:
    """One round of a matcher's and a trader's work on shared accounts: a resting order
    and a crossing one, filled once or twice, settled (one transaction per fill, or
    one for both as the matcher batches), and what is left cancelled."""
    market = rng.choice(markets)
    maker_trader, taker_trader = rng.sample(traders, 2)
    maker_side = rng.choice([Side.BUY, Side.SELL])
    taker_side = Side.SELL if maker_side == Side.BUY else Side.BUY
    # The taker's limit crosses by half a unit, so a buying taker gets price improvement.
    taker_price = "100.50" if taker_side == Side.BUY else "99.50"
    maker = sim.place(maker_trader, market, maker_side, "1", "100")
    taker = sim.place(taker_trader, market, taker_side, "1", taker_price, accept=False)

    trades = [fill_in_sequence(maker, taker, q) for q in rng.choice(FILLS) if q]
    work.trade_ids += [t.pk for t in trades]
    if round_ % 2:
        with transaction.atomic():
            trade_settle_many(trades=trades_for_settlement(t.pk for t in trades))
    else:
        for trade in trades:
            trade_settle(trade=trade)

    sim.cancel(maker)
    sim.cancel(taker)


def vault_round(rng: random.Random, assets, traders, work: Work, round_: int) -> None:
    """Every third round a deposit; every fourth a withdrawal, which completes, fails
    on chain, or is left approved (still held)."""
    if round_ % 3 == 0:
        account, asset = rng.choice(traders), rng.choice(assets)
        sim.deposit(account, asset, DEPOSIT)
        work.deposited[account.pk, asset.pk] += DEPOSIT
    if round_ % 4 == 0:
        account, asset = rng.choice(traders), rng.choice(assets)
        withdrawal = withdrawal_request(account, asset, WITHDRAWAL)
        outcome = (round_ // 4) % 3
        if outcome == 2:
            work.pending_withdrawals[account.pk, asset.pk] += WITHDRAWAL
            return
        withdrawal = withdrawal_process(withdrawal=withdrawal)
        if outcome == 0:
            withdrawal_complete(withdrawal=withdrawal, tx_hash=random_hex(32), block_number=2)
            work.withdrawn[account.pk, asset.pk] += WITHDRAWAL
        else:
            withdrawal_fail(withdrawal=withdrawal, reason="reverted on chain")


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_concurrent_holds_fills_and_vault_moves_queue_and_keep_the_books_exact(markets, traders):
    assets = [markets[0].quote, *(m.base for m in markets)]
    works = [Work() for _ in range(THREADS)]

    def body(index: int, barrier: threading.Barrier) -> None:
        rng = random.Random(index)  # each thread's mix is the same on every run
        barrier.wait(timeout=30)
        for round_ in range(ROUNDS):
            trade_round(rng, markets, traders, works[index], round_)
            vault_round(rng, assets, traders, works[index], round_ + index)

    errors = run_threads(THREADS, body)
    assert errors == [], "\n".join(errors)

    assert ledger_check() == []

    # Every fill written was settled exactly once: none lost, none doubled.
    trade_ids = [pk for work in works for pk in work.trade_ids]
    trades = Trade.objects.filter(pk__in=trade_ids).select_related("market")
    assert sorted(t.pk for t in trades) == sorted(trade_ids)
    assert Trade.objects.count() == len(trade_ids)
    assert set(trades.values_list("settlement_status", flat=True)) == {SettlementStatus.SETTLED}
    settlements = LedgerTransaction.objects.filter(kind=TransactionKind.TRADE)
    assert settlements.count() == len(trade_ids)
    assert set(settlements.values_list("trade_id", flat=True)) == set(trade_ids)

    # Every order finished, holding nothing.
    assert not Order.objects.exclude(
        status__in=[OrderStatus.FILLED, OrderStatus.CANCELLED]
    ).exists()

    # No lost update: each trader's total in each asset is exactly its deposits, less
    # its completed withdrawals, plus what its fills moved (fees in quote).
    expected: dict[tuple[int, int], Decimal] = defaultdict(Decimal)
    for account in traders:
        for asset in assets:
            expected[account.pk, asset.pk] = OPENING[asset.symbol]
    for work in works:
        for key, amount in work.deposited.items():
            expected[key] += amount
        for key, amount in work.withdrawn.items():
            expected[key] -= amount
    fees: dict[int, Decimal] = defaultdict(Decimal)
    for trade in trades:
        base, quote = trade.market.base_id, trade.market.quote_id
        buyer_is_taker = trade.aggressor_side == Side.BUY
        buyer_fee = trade.taker_fee if buyer_is_taker else trade.maker_fee
        seller_fee = trade.maker_fee if buyer_is_taker else trade.taker_fee
        expected[trade.buyer_id, quote] -= trade.quote_quantity + buyer_fee
        expected[trade.seller_id, quote] += trade.quote_quantity - seller_fee
        expected[trade.buyer_id, base] += trade.quantity
        expected[trade.seller_id, base] -= trade.quantity
        fees[trade.market_id] += buyer_fee + seller_fee

    # Orders hold nothing now, so all that is held is the withdrawals still pending.
    pending: Counter = sum((work.pending_withdrawals for work in works), Counter())
    for account in traders:
        for asset in assets:
            available, held = sim.balance(account, asset)
            key = (account.pk, asset.pk)
            assert (available + held, held) == (expected[key], pending[key]), (
                f"account {account.pk} {asset.symbol}"
            )

    # Conservation per asset: what the traders hold plus the venue's fees is what
    # came in through the vault less what went out.
    for asset in assets:
        in_ = OPENING[asset.symbol] * len(traders) + sum(
            work.deposited[a.pk, asset.pk] for work in works for a in traders
        )
        out = sum(work.withdrawn[a.pk, asset.pk] for work in works for a in traders)
        traders_total = sum(sum(sim.balance(a, asset)) for a in traders)
        fee_total = sum(
            LedgerAccount.objects.filter(
                kind=LedgerAccountKind.FEE_REVENUE, asset=asset
            ).values_list("balance", flat=True)
        )
        assert traders_total + fee_total == in_ - out, asset.symbol
        vault = LedgerAccount.objects.get(kind=LedgerAccountKind.VAULT, asset=asset)
        assert vault.balance == out - in_
    for market in markets:
        revenue = LedgerAccount.objects.get(kind=LedgerAccountKind.FEE_REVENUE, market=market)
        assert revenue.balance == fees[market.pk]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_one_fill_settled_from_many_threads_at_once_posts_once(market, traders):
    buyer, seller = traders[:2]
    ask = sim.place(seller, market, Side.SELL, "1", "100")
    bid = sim.place(buyer, market, Side.BUY, "1", "100.50", accept=False)
    trade = sim.fill(ask, bid, "1")
    before = sim.balance(buyer, market.quote), sim.balance(seller, market.quote)
    posted: list[LedgerTransaction | None] = []

    def body(index: int, barrier: threading.Barrier) -> None:
        barrier.wait(timeout=30)
        if index % 2:  # half through the matcher's batch path, half one by one
            with transaction.atomic():
                result = trade_settle_many(trades=trades_for_settlement([trade.pk]))
            posted.append(result[0] if result else None)
        else:
            posted.append(trade_settle(trade=trade))

    errors = run_threads(THREADS, body)
    assert errors == [], "\n".join(errors)

    assert len(posted) == THREADS
    assert sum(1 for txn in posted if txn is not None) == 1
    assert LedgerTransaction.objects.filter(trade=trade).count() == 1
    notional, buyer_fee, seller_fee = D("100"), D("0.05"), D("0.02")
    assert sim.balance(buyer, market.quote) == (
        before[0][0] + before[0][1] - notional - buyer_fee,
        0,
    )
    assert sim.balance(seller, market.quote) == (before[1][0] + notional - seller_fee, 0)
    assert sim.balance(buyer, market.base) == (OPENING["ETH"] + 1, 0)
    trade.refresh_from_db()
    assert trade.settlement_status == SettlementStatus.SETTLED
    assert ledger_check() == []
