"""The matcher as a real process (``manage.py run_matcher``) against real PostgreSQL and
Redis: orders placed through the services come out as its trades; SIGKILLed at random
moments under continuous order flow it loses and doubles nothing; a standby takes over
from a dead owner within two seconds; and ``verify_books`` proves the books right, or
names what is wrong."""

import contextlib
import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Count, Q, Sum

from exchange.matcher.market import MarketMatcher
from exchange.matcher.publish import (
    SNAPSHOT_LEVELS,
    book_key,
    publish_snapshot,
    redis_client,
    snapshot,
)
from exchange.matcher.runner import LOCK_NAMESPACE, heartbeat_key
from exchange.matcher.verification import books_verify
from exchange.models import (
    TERMINAL_STATUSES,
    CommandKind,
    CommandStatus,
    Order,
    OrderCommand,
    OrderStatus,
    Trade,
)
from exchange.services.orders import OrderRejected, order_cancel
from portfolio.models import (
    LedgerAccount,
    LedgerAccountKind,
    LedgerTransaction,
    TransactionKind,
)
from portfolio.reconciliation import ledger_check
from tests.factories import AccountFactory, place_order
from tests.live import REPO, wait_for
from tests.portfolio import sim

D = Decimal


def pending(market) -> int:
    return OrderCommand.objects.filter(market=market, status=CommandStatus.PENDING).count()


def owner_pid(market) -> int | None:
    raw = redis_client().get(heartbeat_key(market.symbol))
    return int(json.loads(raw)["owner"].rsplit(":", 1)[1]) if raw else None


def owns(market, proc: subprocess.Popen) -> bool:
    """``proc`` holds the market's advisory lock (its lock session is in pg_locks)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.granted"
            " AND a.application_name = 'dex-matcher-lock'",
            [LOCK_NAMESPACE, market.pk],
        )
        held = cursor.fetchone()[0]
    return bool(held) and owner_pid(market) == proc.pid


def redis_snapshot(market) -> dict:
    return json.loads(redis_client().get(book_key(market.symbol)))


def as_decimals(book: dict) -> tuple:
    """A snapshot's sequence and levels as numbers (its strings carry the scale of
    whichever Market instance produced them)."""
    sides = ([[D(p), D(q)] for p, q in book[side]] for side in ("bids", "asks"))
    return (book["sequence"], *sides)


# --- verify_books, in process ----------------------------------------------------------


@pytest.mark.django_db
def test_verify_books_passes_for_a_published_book_and_names_every_difference(market, buyer, seller):
    client = redis_client()
    client.delete(book_key(market.symbol))
    place_order(buyer, market, "BUY", "1", "99")
    place_order(buyer, market, "BUY", "2", "99")
    place_order(seller, market, "SELL", "1.5", "101")
    iceberg = place_order(seller, market, "SELL", "5", "102", display_quantity=D("1"))
    matcher = MarketMatcher(market)
    matcher.run_batch()
    place_order(buyer, market, "BUY", "2", "102")  # 1.5 at 101, then half the iceberg's slice
    matcher.run_batch()
    assert matcher.book.depth(1)[1] == [(10200, 500)]  # shows 0.5 of 1; the DB knows 4.5 left
    publish_snapshot(matcher)
    try:
        assert books_verify([market.symbol]) == []
        call_command("verify_books", "--market", market.symbol, "--attempts", "1")

        tampered = snapshot(matcher)
        tampered["bids"][0][1] = "2.5"
        tampered["asks"].append(["150", "1"])
        tampered["sequence"] += 1
        client.set(book_key(market.symbol), json.dumps(tampered))
        differences = books_verify([market.symbol])
        assert differences == [
            f"{market.symbol}: snapshot at sequence {matcher.sequence + 1}, journal at "
            f"{matcher.sequence} (0 commands pending)",
            f"{market.symbol} bids 99.00000000: book shows 2.5, open orders 3.00000000",
            f"{market.symbol} asks 150: book shows 1, no open orders there",
        ]
        with pytest.raises(CommandError, match="3 difference"):
            call_command("verify_books", "--market", market.symbol, "--attempts", "1")
        assert Order.objects.get(pk=iceberg.pk).remaining == D("4.5")
    finally:
        client.delete(book_key(market.symbol))


# --- the matcher as a process ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_orders_placed_through_the_services_trade_in_the_matcher_process(
    market, buyer, seller, matchers
):
    proc = matchers.start()
    ask = place_order(seller, market, "SELL", "2", "100")
    bid = place_order(buyer, market, "BUY", "3", "101")
    wait_for(lambda: not pending(market) and owns(market, proc), 30, "the matcher", matchers)

    ask, bid = Order.objects.get(pk=ask.pk), Order.objects.get(pk=bid.pk)
    assert (ask.status, ask.filled) == ("FILLED", D(2))
    assert (bid.status, bid.filled, bid.remaining) == ("PARTIALLY_FILLED", D(2), D(1))
    trade = Trade.objects.get()
    assert (trade.sequence, trade.price, trade.quantity) == (1, D(100), D(2))
    assert (trade.maker_fee, trade.taker_fee, trade.settlement_status) == (
        D("0.04"),
        D("0.1"),
        "SETTLED",
    )
    assert sim.balance(buyer, market.base) == (D(2), D(0))
    assert sim.balance(buyer, market.quote) == (
        D(10000) - D("200.1") - D("101.0505"),
        D("101.0505"),
    )
    assert sim.balance(seller, market.quote) == (D("199.96"), D(0))
    fee = LedgerAccount.objects.get(kind=LedgerAccountKind.FEE_REVENUE, market=market)
    assert fee.balance == D("0.14")
    book = redis_snapshot(market)
    assert (book["sequence"], book["bids"], book["asks"]) == (
        2,
        [["101.00000000", "1.00000000"]],
        [],
    )
    call_command("verify_books", "--market", market.symbol)


@pytest.mark.django_db(transaction=True)
def test_run_matcher_refuses_to_start_for_a_market_that_does_not_exist(market, matchers):
    # Started anyway, it would run forever and the misspelt market would have no matcher.
    finished = subprocess.run(
        [*matchers.command, "--market", market.symbol, "--market", "ETH-USDT"],
        cwd=REPO,
        env=matchers.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode != 0
    assert "no such market: ETH-USDT" in finished.stderr
    assert market.symbol not in finished.stderr


def _order_flow(market, traders, stop: threading.Event, seed: int, placed: list) -> None:
    """Crossing limit orders from a few traders, and some cancels, until ``stop``. An
    error ends the flow and is left in ``placed`` for the test to see."""
    rng = random.Random(seed)
    try:
        while not stop.is_set():
            trader = rng.choice(traders)
            mine = [o for o in placed[-40:] if o.account_id == trader.pk]
            if mine and rng.random() < 0.2:
                with contextlib.suppress(OrderRejected):  # finished already
                    order_cancel(account=trader, order=rng.choice(mine))
                continue
            side = rng.choice(["BUY", "SELL"])
            offset = rng.randint(-150, 150) * D("0.01") * (-1 if side == "SELL" else 1)
            quantity = D(rng.randint(100, 2000)) * D("0.001")
            placed.append(place_order(trader, market, side, quantity, D(100) + offset))
    except Exception as exc:
        placed.append(exc)
        raise
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_matcher_killed_at_random_moments_loses_and_doubles_nothing(market, matchers):
    rng = random.Random(20240611)
    traders = AccountFactory.create_batch(4)
    for trader in traders:
        sim.deposit(trader, market.base, "100000")
        sim.deposit(trader, market.quote, "10000000")

    placed: list[Order] = []
    stop = threading.Event()
    flow = threading.Thread(target=_order_flow, args=(market, traders, stop, 7, placed))
    proc = matchers.start()
    flow.start()
    kills = 0
    try:
        while kills < 6:
            wait_for(lambda p=proc: owns(market, p), 30, "the matcher to own its market")
            time.sleep(rng.uniform(0.05, 0.8))
            matchers.kill(proc)
            kills += 1
            proc = matchers.start()
    finally:
        stop.set()
        flow.join(30)
    assert not flow.is_alive()
    assert all(isinstance(o, Order) for o in placed), placed[-1]  # no failed placement
    wait_for(lambda: owns(market, proc) and not pending(market), 60, "the drain", matchers)
    trades_before_check = Trade.objects.count()
    # Each matcher ran until killed: none died of a failed batch.
    assert [p.returncode for p in matchers.procs[:-1]] == [-signal.SIGKILL] * kills
    assert proc.poll() is None

    # Every accepted order was applied once and is in one state its fills explain.
    assert kills >= 5
    assert len(placed) > 100
    assert trades_before_check > 20
    orders = Order.objects.filter(market=market)
    assert orders.count() == len(placed)
    places = Counter(
        OrderCommand.objects.filter(kind=CommandKind.PLACE).values_list("order_id", flat=True)
    )
    assert set(places.values()) == {1}
    assert set(places) == {o.pk for o in placed}
    filled = Counter()
    for maker, taker, quantity in Trade.objects.values_list(
        "maker_order_id", "taker_order_id", "quantity"
    ):
        filled[maker] += quantity
        filled[taker] += quantity
    states = Counter()
    for order in orders:
        states[order.status] += 1
        assert order.filled == filled[order.pk], order
        assert order.filled + order.remaining == order.quantity, order
        assert order.sequence is not None or order.status == OrderStatus.REJECTED, order
        assert (order.status in TERMINAL_STATUSES) == (order.done_at is not None), order
        expected = {
            OrderStatus.OPEN: order.filled == 0 < order.remaining,
            OrderStatus.PARTIALLY_FILLED: order.filled > 0 and order.remaining > 0,
            OrderStatus.FILLED: order.remaining == 0,
            OrderStatus.CANCELLED: order.remaining > 0,
            OrderStatus.EXPIRED: order.remaining > 0,
            OrderStatus.REJECTED: order.filled == 0,
        }
        assert expected.get(order.status, False), order
    assert states[OrderStatus.FILLED] > 0, states
    assert states[OrderStatus.CANCELLED] > 0, states

    # The journal and the tape have no gap and no double.
    commands = OrderCommand.objects.filter(market=market)
    assert sorted(commands.values_list("sequence", flat=True)) == list(
        range(1, commands.count() + 1)
    )
    assert list(Trade.objects.order_by("sequence").values_list("sequence", flat=True)) == list(
        range(1, trades_before_check + 1)
    )
    settled = Trade.objects.annotate(
        n=Count("ledger_transactions", filter=Q(ledger_transactions__kind=TransactionKind.TRADE))
    )
    assert set(settled.values_list("n", flat=True)) == {1}
    assert LedgerTransaction.objects.filter(kind=TransactionKind.TRADE).count() == (
        trades_before_check
    )
    assert (
        orders.aggregate(q=Sum("filled"))["q"]
        == 2 * Trade.objects.aggregate(q=Sum("quantity"))["q"]
    )

    # The ledger, the published book and a book rebuilt from the database agree.
    assert ledger_check() == []
    assert books_verify([market.symbol]) == []
    call_command("verify_books", "--market", market.symbol)
    rebuilt = snapshot(MarketMatcher(market))
    published = redis_snapshot(market)
    assert as_decimals(rebuilt) == as_decimals(published)
    assert 0 < len(published["bids"]) <= SNAPSHOT_LEVELS
    assert 0 < len(published["asks"]) <= SNAPSHOT_LEVELS


@pytest.mark.django_db(transaction=True)
def test_a_standby_takes_over_from_a_killed_owner_within_two_seconds(
    market, buyer, seller, matchers
):
    owner = matchers.start()
    wait_for(lambda: owns(market, owner), 30, "the owner", matchers)
    standby = matchers.start()

    def standby_listening() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'dex-matcher-lock' AND datname = current_database()"
            )
            return cursor.fetchone()[0] == 2

    wait_for(standby_listening, 30, "the standby", matchers)
    ask = place_order(seller, market, "SELL", "1", "100")
    wait_for(lambda: not pending(market), 10, "the owner to rest the ask", matchers)
    assert owns(market, owner)
    assert standby.poll() is None

    matchers.kill(owner)
    killed_at = time.monotonic()
    bid = place_order(buyer, market, "BUY", "1", "100")
    command = OrderCommand.objects.get(order=bid)
    wait_for(
        lambda: OrderCommand.objects.filter(pk=command.pk, status=CommandStatus.DONE).exists(),
        10,
        "the standby to match the bid",
        matchers,
    )
    served_in = time.monotonic() - killed_at
    print(f"standby served the new order {served_in:.3f}s after the owner was killed")
    assert served_in < 2
    assert Order.objects.get(pk=ask.pk).status == Order.objects.get(pk=bid.pk).status == "FILLED"
    assert Trade.objects.get().sequence == 1
    wait_for(lambda: owns(market, standby), 5, "the standby's heartbeat", matchers)
    call_command("verify_books", "--market", market.symbol)


@pytest.mark.django_db(transaction=True)
def test_a_matcher_that_loses_its_database_session_stands_by_and_takes_the_market_back(
    market, buyer, seller, matchers
):
    """The database drops the matcher's lock session (a restart, a partition): its
    market locks go with it, so it must not write another batch; it releases the book,
    stays alive, and owns the market again — rebuilt from PostgreSQL — once it can."""
    proc = matchers.start()
    wait_for(lambda: owns(market, proc), 30, "the matcher", matchers)
    ask = place_order(seller, market, "SELL", "1", "100")
    wait_for(lambda: not pending(market), 10, "the ask to rest", matchers)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'dex-matcher-lock' AND datname = current_database()"
        )
        assert cursor.fetchall() == [(True,)]

    bid = place_order(buyer, market, "BUY", "1", "100")
    wait_for(lambda: not pending(market), 20, "the matcher to take the market back", matchers)
    assert proc.poll() is None
    assert Order.objects.get(pk=ask.pk).status == Order.objects.get(pk=bid.pk).status == "FILLED"
    wait_for(lambda: owns(market, proc), 10, "the matcher to own the market again", matchers)
    assert "lost its database session" in matchers.log_tail()
    call_command("verify_books", "--market", market.symbol)
