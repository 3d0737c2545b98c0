"""The matcher's apply → persist cycle against real PostgreSQL: orders placed through
the services come out as the engine's trades, with money moved and fees charged, and
the books stay provably right after every batch."""

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from exchange.matcher.market import UNPROCESSABLE_STRIKES, MarketMatcher
from exchange.models import CommandStatus, Order, OrderCommand, OrderStatus, Trade
from exchange.services.markets import MarketStateError, market_halt, market_resume
from exchange.services.orders import (
    OrderRejected,
    order_amend,
    order_cancel,
    order_cancel_all,
)
from portfolio.models import LedgerAccount, LedgerAccountKind
from portfolio.reconciliation import ledger_check
from tests.factories import AccountFactory, AssetFactory, MarketFactory, place_order
from tests.portfolio import sim

D = Decimal


def refreshed(*orders: Order) -> list[Order]:
    return [Order.objects.get(pk=o.pk) for o in orders]


@pytest.fixture
def matcher(market) -> MarketMatcher:
    return MarketMatcher(market)


@pytest.fixture(autouse=True)
def books_are_right_after_each_test():
    yield
    assert ledger_check() == []


pytestmark = pytest.mark.django_db


def test_crossing_orders_trade_at_the_makers_price_and_money_moves(market, matcher, buyer, seller):
    ask = place_order(seller, market, "SELL", "2", "100")
    matcher.run_batch()
    bid = place_order(buyer, market, "BUY", "3", "101")
    result = matcher.run_batch()

    ask, bid = refreshed(ask, bid)
    assert (ask.status, ask.filled, ask.sequence is not None) == ("FILLED", D(2), True)
    assert (bid.status, bid.filled, bid.remaining) == ("PARTIALLY_FILLED", D(2), D(1))
    assert bid.average_price == D(100)
    trade = Trade.objects.get()
    assert (trade.price, trade.quantity, trade.aggressor_side) == (D(100), D(2), "BUY")
    assert (trade.maker_fee, trade.taker_fee) == (D("0.04"), D("0.1"))
    assert trade.settlement_status == "SETTLED"
    assert result.commands == 1
    assert [t.pk for t in result.trades] == [trade.pk]

    # Buyer: 200 + 0.1 fee paid; 1 @ 101 still held with its fee reserve (101.0505).
    assert sim.balance(buyer, market.quote) == (
        D("10000") - D("200.1") - D("101.0505"),
        D("101.0505"),
    )
    assert sim.balance(buyer, market.base) == (D(2), D(0))
    assert sim.balance(seller, market.quote) == (D("199.96"), D(0))
    fee = LedgerAccount.objects.get(kind=LedgerAccountKind.FEE_REVENUE, market=market)
    assert fee.balance == D("0.14")
    assert set(OrderCommand.objects.values_list("status", flat=True)) == {CommandStatus.DONE}


def test_a_resting_order_is_open_and_a_cancel_releases_its_hold(market, matcher, buyer):
    bid = place_order(buyer, market, "BUY", "1", "99")
    matcher.run_batch()
    assert refreshed(bid)[0].status == OrderStatus.OPEN
    assert matcher.book.best_bid() == matcher.units.price_to_ticks(D(99))

    order_cancel(account=buyer, order=bid)
    matcher.run_batch()
    bid = refreshed(bid)[0]
    assert (bid.status, bid.reason) == ("CANCELLED", "USER_REQUEST")
    assert sim.balance(buyer, market.quote) == (D(10000), D(0))
    assert matcher.book.best_bid() is None


def test_a_post_only_order_that_would_take_is_rejected_and_released(market, matcher, buyer, seller):
    place_order(seller, market, "SELL", "1", "100")
    maker = place_order(buyer, market, "BUY", "1", "100", post_only=True)
    matcher.run_batch()
    maker = refreshed(maker)[0]
    assert (maker.status, maker.reason, maker.sequence) == (
        "REJECTED",
        "POST_ONLY_WOULD_TAKE",
        None,
    )
    assert sim.balance(buyer, market.quote) == (D(10000), D(0))
    OrderCommand.objects.create(market=market, kind="CANCEL", account=buyer, order=maker)
    matcher.run_batch()  # a cancel for an order that never rested changes nothing
    assert refreshed(maker)[0].reason == "POST_ONLY_WOULD_TAKE"


def test_a_market_buy_by_quote_amount_spends_within_it(market, matcher, buyer, seller):
    place_order(seller, market, "SELL", "1", "100")
    place_order(seller, market, "SELL", "5", "101")
    order = place_order(buyer, market, "BUY", type="MARKET", quote_quantity=D("300"))
    matcher.run_batch()
    order = refreshed(order)[0]
    assert order.status in ("FILLED", "CANCELLED")
    spent = D(10000) - sim.balance(buyer, market.quote)[0]
    assert spent <= D(300)
    assert sim.balance(buyer, market.quote)[1] == 0
    assert sim.balance(buyer, market.base)[0] == order.filled > D(2)


def test_a_market_buy_by_quantity_never_pays_above_its_protection(market, matcher, buyer, seller):
    place_order(seller, market, "SELL", "1", "100")
    place_order(seller, market, "SELL", "1", "110")
    order = place_order(buyer, market, "BUY", "2", type="MARKET", protection_price=D("105"))
    matcher.run_batch()
    order = refreshed(order)[0]
    assert (order.status, order.filled) == ("CANCELLED", D(1))
    assert sim.balance(buyer, market.quote) == (D(10000) - D("100.05"), D(0))


def test_gtt_orders_expire_at_their_time(market, matcher, buyer):
    expires = timezone.now() + timedelta(seconds=30)
    bid = place_order(buyer, market, "BUY", "1", "99", time_in_force="GTT", expires_at=expires)
    matcher.run_batch()
    assert refreshed(bid)[0].status == "OPEN"
    matcher.run_batch(now_ms=int((expires + timedelta(seconds=1)).timestamp() * 1000))
    assert refreshed(bid)[0].status == "EXPIRED"
    assert sim.balance(buyer, market.quote) == (D(10000), D(0))


def test_an_amend_up_holds_more_first_and_one_the_trader_cannot_fund_is_refused(
    market, matcher, buyer
):
    bid = place_order(buyer, market, "BUY", "10", "100")
    matcher.run_batch()
    order_amend(account=buyer, order=bid, quantity=D("20"))
    matcher.run_batch()
    bid = refreshed(bid)[0]
    assert (bid.quantity, bid.remaining) == (D(20), D(20))
    assert sim.balance(buyer, market.quote)[1] == D("2001")

    order_amend(account=buyer, order=bid, quantity=D("200"))  # 20,010 > 10,000
    matcher.run_batch()
    command = OrderCommand.objects.filter(kind="AMEND").order_by("-id").first()
    assert command.result == {"rejected": "INSUFFICIENT_FUNDS"}
    assert refreshed(bid)[0].quantity == D(20)

    order_amend(account=buyer, order=bid, price=D("90"))
    matcher.run_batch()
    assert sim.balance(buyer, market.quote)[1] == D("1800.9")

    # An amend the engine refuses (the market halted before it, in the journal) holds
    # nothing more.
    market_halt(market=market)
    order_amend(account=buyer, order=bid, quantity=D("30"))
    drain(matcher)
    command = OrderCommand.objects.filter(kind="AMEND").order_by("-id").first()
    assert command.result == {"rejected": "MARKET_HALTED"}
    assert sim.balance(buyer, market.quote)[1] == D("1800.9")
    # Once the halt is applied, the order service refuses the amend itself.
    with pytest.raises(OrderRejected) as refused:
        order_amend(account=buyer, order=bid, quantity=D("30"))
    assert refused.value.code == "MARKET_HALTED"


def test_cancel_all_and_halt(market, matcher, buyer, seller):
    place_order(buyer, market, "BUY", "1", "99")
    place_order(buyer, market, "BUY", "1", "98")
    mine = place_order(seller, market, "SELL", "1", "105")
    matcher.run_batch()
    order_cancel_all(account=buyer, market=market)
    matcher.run_batch()
    assert Order.objects.filter(account=buyer, status="CANCELLED").count() == 2
    assert refreshed(mine)[0].status == "OPEN"

    market_halt(market=market)
    matcher.run_batch()
    market.refresh_from_db()
    assert market.status == "HALTED"
    assert matcher.book.halted
    with pytest.raises(MarketStateError):
        market_halt(market=market)

    market_resume(market=market)
    matcher.run_batch()
    market.refresh_from_db()
    assert market.status == "OPEN"
    assert not matcher.book.halted


def test_a_restarted_matcher_rebuilds_the_same_book(market, matcher, buyer, seller):
    for price in ("99", "98", "98"):
        place_order(buyer, market, "BUY", "1", price)
    for price in ("101", "102"):
        place_order(seller, market, "SELL", "1.5", price)
    place_order(seller, market, "SELL", "0.5", "99")  # trades, leaving a partial bid
    matcher.run_batch()
    rebuilt = MarketMatcher(market)
    assert rebuilt.book.depth(10) == matcher.book.depth(10)
    assert [o.order_id for o in rebuilt.book.orders()] == [
        o.order_id for o in matcher.book.orders()
    ]
    assert (rebuilt.sequence, rebuilt.trade_sequence) == (matcher.sequence, matcher.trade_sequence)


@pytest.mark.django_db(transaction=True)
def test_a_command_that_commits_late_is_never_skipped(market, buyer, seller):
    """Command A takes the lower id but commits after command B, which the matcher has
    already processed; the matcher still applies A (it asks for what is not done, not
    for ids past a cursor)."""
    matcher = MarketMatcher(market)
    bid = place_order(buyer, market, "BUY", "1", "99")
    matcher.run_batch()

    inserted, release = threading.Event(), threading.Event()

    def slow_writer():
        with transaction.atomic():
            OrderCommand.objects.create(market=market, kind="CANCEL", account=buyer, order=bid)
            inserted.set()
            release.wait(10)
        connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert inserted.wait(10)
    later = place_order(seller, market, "SELL", "1", "105")  # a higher id, committed first
    matcher.run_batch()
    assert refreshed(later)[0].status == "OPEN"
    late = OrderCommand.objects.filter(kind="CANCEL").first()
    assert late is None  # not visible yet: uncommitted

    release.set()
    writer.join(10)
    matcher.run_batch()
    cancel = OrderCommand.objects.get(kind="CANCEL")
    place_later = OrderCommand.objects.get(order=later)
    assert cancel.status == "DONE"
    assert cancel.pk < place_later.pk
    assert cancel.sequence > place_later.sequence  # applied in the order it became visible
    assert refreshed(bid)[0].status == "CANCELLED"
    assert ledger_check() == []


def test_pending_commands_are_read_by_their_index_after_a_backlog(market):
    """Statistics taken while a backlog was pending, then the backlog done and nothing
    analysed since (autovacuum has not come round): the matcher's query still reads the
    pending-command index, not the whole journal by primary key."""
    from exchange.matcher.market import _PENDING

    other = MarketFactory(quote=market.quote)
    commands = (
        "INSERT INTO exchange_ordercommand (market_id, kind, payload, status, created_at)"
        " SELECT CASE WHEN n %% 2 = 0 THEN %s ELSE %s END, 'RESUME', '{}', 'PENDING', now()"
        "   FROM generate_series(1, %s) AS n"
    )
    # Done in id order, as the matcher does it (a command's sequence: its id here).
    done = (
        "UPDATE exchange_ordercommand SET status = 'DONE', sequence = id,"
        "       processed_at = now(), result = '{}' WHERE status = 'PENDING'"
    )
    with connection.cursor() as cursor:
        # Two markets' journal, most of it done, then a backlog, analysed as it stood;
        # written without the tables' triggers (a NOTIFY a row made this take seconds):
        # what the planner sees is the same.
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(commands, [market.pk, other.pk, 40_000])
        cursor.execute(done)
        cursor.execute(commands, [market.pk, other.pk, 10_000])
        cursor.execute("ANALYZE exchange_ordercommand")
        cursor.execute(done)
        cursor.execute("SET LOCAL session_replication_role = origin")
        cursor.execute(commands, [market.pk, other.pk, 4])
        cursor.execute("EXPLAIN " + _PENDING, [market.pk, 500])
        plan = "\n".join(row[0] for row in cursor.fetchall())
        # A quiet market (the matcher asks for each it owns on every round) reads only
        # its own entries: none, not every other market's.
        quiet = MarketFactory(quote=market.quote)
        cursor.execute("EXPLAIN " + _PENDING, [quiet.pk, 500])
        quiet_plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "ordercommand_pending_" in plan, plan
    assert "exchange_ordercommand_pkey" not in plan, plan
    assert f"Index Cond: (market_id = {quiet.pk})" in quiet_plan, quiet_plan
    assert "ordercommand_pending_by_id" not in quiet_plan, quiet_plan
    assert "exchange_ordercommand_pkey" not in quiet_plan, quiet_plan
    pending = MarketMatcher(market).pending(500)
    assert [(c.market_id, c.status) for c in pending] == [(market.pk, "PENDING")] * 2
    assert pending[0].pk < pending[1].pk
    assert MarketMatcher(quiet).pending(500) == []


def test_the_journal_is_analysed_and_vacuumed_after_a_fixed_number_of_changes():
    """Not after a fraction of it: a long journal would wait millions of commands."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'exchange_ordercommand'")
        options = dict(option.split("=") for option in cursor.fetchone()[0])
    assert options == {
        "autovacuum_analyze_scale_factor": "0",
        "autovacuum_analyze_threshold": "1000",
        "autovacuum_vacuum_scale_factor": "0",
        "autovacuum_vacuum_threshold": "1000",
    }


def test_every_trader_sees_the_fills_of_many_orders(market, matcher):
    traders = AccountFactory.create_batch(4)

    for trader in traders:
        sim.deposit(trader, market.base, "100")
        sim.deposit(trader, market.quote, "100000")
    for i in range(40):
        trader = traders[i % 4]
        side = "BUY" if i % 2 else "SELL"
        place_order(trader, market, side, "0.5", str(100 + (i % 5) - 2))
    matcher.run_batch()
    assert Trade.objects.count() > 5
    assert not Order.objects.filter(status="PENDING").exists()
    bids, asks = matcher.book.depth(1)
    assert not bids or not asks or bids[0][0] < asks[0][0]


def test_a_failed_batch_leaves_nothing_behind_and_the_next_one_applies_it(
    market, matcher, buyer, seller, monkeypatch
):
    from exchange.matcher import market as matcher_module

    ask = place_order(seller, market, "SELL", "1", "100")
    bid = place_order(buyer, market, "BUY", "1", "100")
    original = matcher_module._Batch.persist

    def fail_once(batch):
        monkeypatch.setattr(matcher_module._Batch, "persist", original)
        raise RuntimeError("the database went away mid-batch")

    monkeypatch.setattr(matcher_module._Batch, "persist", fail_once)
    with pytest.raises(RuntimeError):
        matcher.run_batch()
    # Nothing persisted, and the book is what the database says: empty.
    assert not Trade.objects.exists()
    assert matcher.book.depth(5) == ([], [])
    assert {o.status for o in refreshed(ask, bid)} == {"PENDING"}

    # Its commands are applied again, one at a time until past the failed batch.
    drain(matcher)
    assert {o.status for o in refreshed(ask, bid)} == {"FILLED"}
    assert Trade.objects.count() == 1
    assert matcher.isolate_through is None
    assert matcher.strikes == {}


def test_a_rebuilt_book_numbers_new_orders_after_archived_ones(market, matcher, buyer, seller):
    """The market's newest orders finished long ago and went to the archive; a matcher
    that starts (or takes over) then numbers new orders after them, not again from the
    newest order still in the live table."""
    from exchange.models import OrderArchive
    from exchange.services.archiving import orders_archive

    resting = place_order(buyer, market, "BUY", "1", "90")
    matcher.run_batch()
    ask = place_order(seller, market, "SELL", "1", "100")
    bid = place_order(buyer, market, "BUY", "1", "100")
    matcher.run_batch()
    finished = refreshed(ask, bid)
    assert {o.status for o in finished} == {"FILLED"}
    long_ago = timezone.now() - timedelta(days=400)
    for order in finished:
        sim.backdate(order, long_ago)
    assert orders_archive(done_before=long_ago + timedelta(seconds=1), limit=10) == 2
    newest_archived = max(o.sequence for o in finished)
    assert refreshed(resting)[0].sequence < newest_archived

    restarted = MarketMatcher(market)
    later = place_order(buyer, market, "BUY", "1", "91")
    restarted.run_batch()
    assert refreshed(later)[0].sequence == newest_archived + 1
    numbered = list(OrderArchive.objects.values_list("sequence", flat=True))
    assert refreshed(later)[0].sequence not in numbered


def drain(matcher: MarketMatcher, attempts: int = 12) -> int:
    """Run batches until the journal is empty (a batch may fail); returns the failures."""
    failures = 0
    for _ in range(attempts):
        try:
            matcher.run_batch()
        except Exception:
            failures += 1
            continue
        if not OrderCommand.objects.filter(status=CommandStatus.PENDING).exists():
            return failures
    raise AssertionError(f"the journal is not empty after {attempts} batches")


def test_an_amend_that_cannot_be_persisted_is_refused_and_the_market_goes_on(
    market, matcher, buyer, seller
):
    iceberg = place_order(buyer, market, "BUY", "10", "100", display_quantity=D("5"))
    matcher.run_batch()
    # Below its visible part: a row the database refuses (order_iceberg_rules). The
    # order service refuses this amend; the journal is written here as a corrupt or
    # older writer could have.
    poison = OrderCommand.objects.create(
        market=market, kind="AMEND", account=buyer, order=iceberg, payload={"quantity": "2"}
    )
    ask = place_order(seller, market, "SELL", "1", "100")
    refusals = ("dex_matcher_commands_refused_total", {"market": market.symbol, "kind": "AMEND"})
    before = REGISTRY.get_sample_value(*refusals) or 0
    assert drain(matcher) == 3  # the batch, then the amend alone twice
    assert REGISTRY.get_sample_value(*refusals) == before + 1  # for operators' alerts

    poison.refresh_from_db()
    assert (poison.status, poison.result) == (CommandStatus.DONE, {"rejected": "UNPROCESSABLE"})
    iceberg, ask = refreshed(iceberg, ask)
    assert (iceberg.quantity, iceberg.display_quantity) == (D(10), D(5))  # unchanged
    assert (iceberg.status, iceberg.filled) == ("PARTIALLY_FILLED", D(1))
    assert ask.status == "FILLED"
    assert matcher.isolate_through is None
    assert matcher.strikes == {}
    sequences = list(OrderCommand.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, len(sequences) + 1))  # the journal stays gap-free


def test_a_placement_that_cannot_be_settled_is_rejected_and_its_hold_released(
    market, matcher, buyer, seller, monkeypatch
):
    from exchange.matcher import market as matcher_module

    ask = place_order(seller, market, "SELL", "1", "100")
    matcher.run_batch()
    poison = place_order(buyer, market, "BUY", "1", "100")
    later = place_order(buyer, market, "BUY", "1", "99")
    original = matcher_module.trade_settle_many

    def refuse_the_poison(*, trades, **kwargs):
        if any(t.taker_order_id == poison.pk for t in trades):
            raise ValueError("a fill that cannot be settled")
        return original(trades=trades, **kwargs)

    monkeypatch.setattr(matcher_module, "trade_settle_many", refuse_the_poison)
    drain(matcher)

    poison, later, ask = refreshed(poison, later, ask)
    assert (poison.status, poison.reason, poison.filled) == ("REJECTED", "UNPROCESSABLE", D(0))
    assert (later.status, ask.status) == ("OPEN", "OPEN")
    assert not Trade.objects.exists()
    # Only the later bid is held for (99 plus its 5 bp fee reserve).
    assert sim.balance(buyer, market.quote) == (D("10000") - D("99.0495"), D("99.0495"))


def test_a_lost_database_never_gets_a_command_refused(market, matcher, buyer, monkeypatch):
    from django.db import OperationalError

    from exchange.matcher import market as matcher_module

    bid = place_order(buyer, market, "BUY", "1", "99")
    original = matcher_module._Batch.persist
    calls = []

    def database_gone(batch):
        calls.append(1)
        if len(calls) <= 2 * matcher_module.UNPROCESSABLE_STRIKES + 1:
            raise OperationalError("server closed the connection unexpectedly")
        return original(batch)

    monkeypatch.setattr(matcher_module._Batch, "persist", database_gone)
    assert drain(matcher) == 2 * matcher_module.UNPROCESSABLE_STRIKES + 1
    assert refreshed(bid)[0].status == "OPEN"
    assert matcher.strikes == {}
    assert matcher.isolate_through is None


def _runner_of(*matchers: MarketMatcher, monkeypatch):
    """A matcher process's loop, in-process, owning ``matchers``; a pause of the whole
    loop (``time.sleep``) fails the test."""
    from types import SimpleNamespace

    from exchange.matcher import runner as runner_module

    def paused(seconds):
        raise AssertionError(f"the matcher process paused {seconds}s for one market")

    monkeypatch.setattr(runner_module.time, "sleep", paused)
    runner = runner_module.Runner()
    runner.owned = {m.market.pk: m for m in matchers}
    runner.publisher = SimpleNamespace(submit=lambda outbox: None)
    monkeypatch.setattr(runner, "_fence", lambda: None)
    return runner


@pytest.mark.django_db(transaction=True)
def test_a_command_that_cannot_be_persisted_is_refused_without_a_pause(
    market, matcher, buyer, seller, quote, monkeypatch
):
    btc = MarketFactory(base=AssetFactory(symbol="BTC"), quote=quote)
    iceberg = place_order(buyer, market, "BUY", "10", "100", display_quantity=D("5"))
    matcher.run_batch()
    poison = OrderCommand.objects.create(  # below its visible part: refused by PostgreSQL
        market=market, kind="AMEND", account=buyer, order=iceberg, payload={"quantity": "2"}
    )
    elsewhere = place_order(buyer, btc, "BUY", "1", "100")
    runner = _runner_of(matcher, MarketMatcher(btc), monkeypatch=monkeypatch)

    assert runner._run_owned() is True  # the batch failed: its commands run alone, at once
    assert refreshed(elsewhere)[0].status == "OPEN"  # the other market did not wait
    rounds = 1
    while OrderCommand.objects.filter(status=CommandStatus.PENDING).exists():
        assert rounds < 5
        runner._run_owned()
        rounds += 1
    poison.refresh_from_db()
    assert poison.result == {"rejected": "UNPROCESSABLE"}
    assert rounds == 1 + UNPROCESSABLE_STRIKES + 1  # the batch, the amend alone twice, refused
    assert (runner.not_before, runner.failures) == ({}, {})


@pytest.mark.django_db(transaction=True)
def test_a_command_whose_refusal_fails_too_backs_off(market, buyer, monkeypatch):
    """Once a command's refusal itself cannot be persisted, every batch would be that
    one again: the market waits between tries rather than retrying at once, forever."""
    from exchange.matcher import market as matcher_module

    place_order(buyer, market, "BUY", "1", "99")

    def broken(batch):  # nothing this market writes can be persisted
        raise ValueError("a batch the database refuses")

    monkeypatch.setattr(matcher_module._Batch, "persist", broken)
    matcher = MarketMatcher(market)
    runner = _runner_of(matcher, monkeypatch=monkeypatch)
    at_once = []
    for _ in range(6):
        runner.not_before.pop(market.pk, None)  # every round may try
        at_once.append(runner._run_owned())
    # The batch, the command alone once per strike; then its refusal fails, and fails.
    assert at_once == [True] * (1 + UNPROCESSABLE_STRIKES) + [False] * 3
    assert runner.not_before[market.pk] > time.monotonic()
    assert OrderCommand.objects.get().status == CommandStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_a_market_whose_database_fails_waits_alone(market, matcher, buyer, quote, monkeypatch):
    from django.db import OperationalError

    from exchange.matcher import market as matcher_module

    btc = MarketFactory(base=AssetFactory(symbol="BTC"), quote=quote)
    stuck = place_order(buyer, market, "BUY", "1", "99")
    original = matcher_module._Batch.persist
    attempts = []

    def database_busy(batch):
        if batch.m is matcher:
            attempts.append(1)
            raise OperationalError("deadlock detected")
        return original(batch)

    monkeypatch.setattr(matcher_module._Batch, "persist", database_busy)
    runner = _runner_of(matcher, MarketMatcher(btc), monkeypatch=monkeypatch)
    assert runner._run_owned() is False
    assert runner.not_before[market.pk] > time.monotonic()  # it tries again later, alone
    runner.not_before[market.pk] += 60  # later than this test's next round, however slow
    elsewhere = place_order(buyer, btc, "BUY", "1", "100")
    runner._run_owned()
    assert refreshed(elsewhere)[0].status == "OPEN"  # served while the other waits
    assert len(attempts) == 1  # not retried before its time

    monkeypatch.setattr(matcher_module._Batch, "persist", original)
    runner.not_before[market.pk] = 0.0  # its time has come
    runner._run_owned()
    assert refreshed(stuck)[0].status == "OPEN"
    assert runner.not_before == {}


@pytest.mark.django_db(transaction=True)
def test_an_amend_takes_no_lock_before_its_batch_locks_in_order(monkeypatch):
    """Two markets' batches share a trader's quote accounts. An amend that holds more
    used to lock its trader's accounts while applied, before its batch locked the rest
    in primary-key order: with another market's batch holding a lower account and
    waiting for those, PostgreSQL found a deadlock."""

    from exchange.matcher import market as matcher_module
    from tests.factories import AssetFactory

    usdc, eth, btc = (AssetFactory(symbol=s) for s in ("USDC", "ETH", "BTC"))
    eth_usdc, btc_usdc = MarketFactory(base=eth, quote=usdc), MarketFactory(base=btc, quote=usdc)
    z = AccountFactory(kyc_tier=1)
    sim.deposit(z, usdc, "1000")  # Z's quote accounts have the lower ids
    sim.deposit(z, eth, "10")
    sim.deposit(z, btc, "10")
    x = AccountFactory(kyc_tier=1)
    sim.deposit(x, usdc, "10000")
    first, second = MarketMatcher(eth_usdc), MarketMatcher(btc_usdc)
    place_order(z, eth_usdc, "SELL", "1", "100")
    bid = place_order(x, eth_usdc, "BUY", "1", "90")
    first.run_batch()
    place_order(z, btc_usdc, "SELL", "1", "100")
    second.run_batch()
    order_amend(account=x, order=refreshed(bid)[0], price=D("100"))  # holds more; crosses Z
    place_order(x, btc_usdc, "BUY", "1", "100")  # the second market trades X with Z

    applied, go = threading.Event(), threading.Event()
    persist = matcher_module._Batch.persist

    def paused(batch):
        if batch.m is first:
            applied.set()  # the amend is applied: any lock it took is held now
            go.wait(10)
        return persist(batch)

    monkeypatch.setattr(matcher_module._Batch, "persist", paused)
    failures: dict[str, str | None] = {}

    def run(name: str, matcher: MarketMatcher) -> None:
        try:
            matcher.run_batch()
            failures[name] = None
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()

    one = threading.Thread(target=run, args=("ETH-USDC", first))
    one.start()
    assert applied.wait(10)
    two = threading.Thread(target=run, args=("BTC-USDC", second))
    two.start()
    two.join(1.5)  # it locks Z's quote accounts, then X's
    go.set()
    one.join(30)
    two.join(30)

    assert failures == {"ETH-USDC": None, "BTC-USDC": None}
    assert Trade.objects.count() == 2
    assert ledger_check() == []


def at(moment) -> int:
    return int(moment.timestamp() * 1000)


def test_an_order_past_its_time_never_trades_after_a_restart(market, buyer, seller):
    expires = timezone.now() + timedelta(seconds=30)
    bid = place_order(buyer, market, "BUY", "1", "100", time_in_force="GTT", expires_at=expires)
    MarketMatcher(market).run_batch(now_ms=at(timezone.now()))
    assert refreshed(bid)[0].status == "OPEN"
    # The matcher is away past the bid's time; a sell that would have hit it waits.
    ask = place_order(seller, market, "SELL", "1", "100")
    later = at(expires + timedelta(hours=1))
    restarted = MarketMatcher(market)
    restarted.run_batch(now_ms=later)
    bid, ask = refreshed(bid, ask)
    assert (bid.status, ask.status) == ("EXPIRED", "OPEN")
    assert not Trade.objects.exists()
    # A placement past its own time is refused, even one journalled before it.
    late = place_order(buyer, market, "BUY", "1", "100", time_in_force="GTT", expires_at=expires)
    restarted.run_batch(now_ms=later)
    late = refreshed(late)[0]
    assert (late.status, late.reason) == ("REJECTED", "ALREADY_EXPIRED")


def test_a_failed_batch_sweeps_alone_before_its_commands_run_one_at_a_time(
    market, matcher, buyer, seller, monkeypatch
):
    from exchange.matcher import market as matcher_module

    expires = timezone.now() + timedelta(seconds=30)
    place_order(buyer, market, "BUY", "1", "100", time_in_force="GTT", expires_at=expires)
    matcher.run_batch(now_ms=at(timezone.now()))
    ask = place_order(seller, market, "SELL", "1", "100")
    persist = matcher_module._Batch.persist
    calls = []

    def fail_once(batch):
        calls.append(len(batch.done))
        if len(calls) == 1:
            raise ValueError("a batch that expired an order and applied a command")
        return persist(batch)

    monkeypatch.setattr(matcher_module._Batch, "persist", fail_once)
    later = at(expires + timedelta(hours=1))
    with pytest.raises(ValueError, match="expired an order"):
        matcher.run_batch(now_ms=later)
    assert matcher.sweep_alone
    matcher.run_batch(now_ms=later)  # the sweep alone: no command in it
    assert calls == [1, 0]
    matcher.run_batch(now_ms=later)  # then the command, alone, never struck
    assert matcher.strikes == {}
    assert refreshed(ask)[0].status == "OPEN"
    assert not Trade.objects.exists()


def test_self_trade_prevention_decrements_an_iceberg_to_what_is_left(market, matcher, buyer):
    sim.deposit(buyer, market.base, "50")
    iceberg = place_order(buyer, market, "BUY", "10", "100", display_quantity=D("4"))
    matcher.run_batch()
    sell = place_order(buyer, market, "SELL", "8", "100", self_trade_prevention="DECREMENT")
    matcher.run_batch()  # no failure: nothing refused
    iceberg, sell = refreshed(iceberg, sell)
    assert (iceberg.quantity, iceberg.remaining, iceberg.display_quantity) == (D(2), D(2), D(2))
    assert sell.status == "CANCELLED"
    assert not Trade.objects.exists()
    assert matcher.isolate_through is None


def test_self_trade_prevention_decrements_a_market_buy_by_quote_amount(
    market, matcher, buyer, seller
):
    sim.deposit(buyer, market.base, "50")
    own = place_order(buyer, market, "SELL", "1", "100")
    place_order(seller, market, "SELL", "5", "101")
    matcher.run_batch()
    buy = place_order(
        buyer,
        market,
        "BUY",
        type="MARKET",
        quote_quantity=D("300"),
        self_trade_prevention="DECREMENT",
    )
    matcher.run_batch()  # no failure: nothing refused
    buy, own = refreshed(buy, own)
    assert buy.quantity is None
    assert buy.status in ("FILLED", "CANCELLED", "PARTIALLY_FILLED", "EXPIRED")
    assert OrderCommand.objects.get(order=buy).result != {"rejected": "UNPROCESSABLE"}
    assert matcher.isolate_through is None
