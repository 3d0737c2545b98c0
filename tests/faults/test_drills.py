"""Fault drills: break one part of the running platform while traders place signed
orders over HTTP and a WebSocket client follows the book, then prove nothing was lost,
doubled or misreported.

Each drill runs web + two matchers (owner and hot standby) + a Celery worker on the
test database (through a proxy that can refuse connections) and a Redis server of its
own, puts ~20 orders/s through the API from four clients, and while that runs:

- kills the owning matcher with SIGKILL;
- kills the web process with SIGKILL and starts it again;
- kills the Celery worker with SIGKILL while it works through a queue of tasks, and
  starts it again;
- kills Redis with SIGKILL and starts it again (empty);
- makes PostgreSQL refuse connections (and drops the open ones) for a few seconds.

After each, with the load stopped, it checks:

1. every order the API accepted is in the database exactly once, under the id the
   client was given, and there is no order a client was not told about;
2. no client got a wrong answer: every answer was the order it sent, a clear 4xx, or
   a retryable status (429/502/503/504 or a dropped connection) that the client
   retried with the same client order id;
3. the matchers caught up: no command is left pending;
4. ``ledger_check`` and ``verify_books`` pass;
5. the WebSocket client, resubscribing whenever it saw a gap or lost its connection,
   holds the same book as the matcher;
6. the platform served again within a few seconds: the time from the end of the fault
   to the first order answered after it, matched (not PENDING), is printed.

Run with ``make test-faults`` (they are not part of ``make test``: a few minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis
from django.core.management import call_command
from websockets.asyncio.client import connect

from exchange.matcher.publish import book_key
from exchange.matcher.runner import heartbeat_key
from exchange.models import (
    CommandStatus,
    Order,
    OrderBookSnapshot,
    OrderCommand,
    OrderStatus,
)
from exchange.services.sessions import api_key_create
from tests.api_support import Wallet
from tests.faults.support import (
    VISIBILITY_TIMEOUT,
    Outcome,
    Stack,
    signed_orders,
    stack_running,
    summarize,
)
from tests.live import REPO, wait_for
from tests.portfolio import sim

pytestmark = pytest.mark.django_db(transaction=True)
D = Decimal

CLIENTS = 4
RATE_PER_CLIENT = 5.0  # orders/s per client: 20 orders/s in all
BEFORE, AFTER = 4.0, 8.0  # seconds of load before the fault and after it ends
RECOVERY_LIMIT = 10.0  # seconds within which the platform must serve again
RESULTS: list[str] = []


@pytest.fixture(autouse=True)
def quiet_http_client_logs():
    logger = logging.getLogger("httpx")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@pytest.fixture
def wallets(market):
    wallets = []
    for _ in range(6):
        wallet = Wallet.create(kyc_tier=1, country="GB")
        sim.deposit(wallet.account, market.base, "1000000")
        sim.deposit(wallet.account, market.quote, "100000000")
        issued = api_key_create(account=wallet.account, name="drill", scopes=["read", "trade"])
        wallets.append((wallet, issued.secret))
    return wallets


@pytest.fixture
def stack(market, tmp_path):
    with stack_running(market.symbol, tmp_path) as stack:
        owner = stack.start_matcher("matcher-a")
        wait_for(lambda: _owner_pid(stack) == owner.pid, 60, "matcher-a to own the market", stack)
        stack.start_matcher("matcher-b")
        stack.start_web()
        stack.start_worker()
        yield stack


@pytest.fixture(scope="module", autouse=True)
def results_table():
    yield
    if RESULTS:
        header = (
            f"{'drill':<28}{'orders':>7}{'accepted':>9}{'retried':>8}{'refused':>8}"
            f"{'wrong':>6}{'recovery s':>11}  retryable answers seen"
        )
        print("\n\n" + header + "\n" + "\n".join(RESULTS) + "\n")


# --- the parts of a drill ------------------------------------------------------------


def _owner_pid(stack: Stack) -> int | None:
    raw = redis.Redis.from_url(stack.redis.url).get(heartbeat_key(stack.symbol))
    if not raw:
        return None
    return int(json.loads(raw)["owner"].rsplit(":", 1)[1])


class BookFollower:
    """A WebSocket client that keeps the book as the README tells clients to: apply the
    snapshot, then deltas in sequence; on a gap, or when the connection drops,
    subscribe again for a fresh snapshot."""

    def __init__(self, url: str, symbol: str) -> None:
        self.url, self.symbol = url, symbol
        self.sides: dict[str, dict[Decimal, Decimal]] = {"bids": {}, "asks": {}}
        self.sequence: int | None = None
        self.resyncs = 0
        self.stopping = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> BookFollower:
        self.thread.start()
        self.future = asyncio.run_coroutine_threadsafe(self._run(), self.loop)
        return self

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(Exception):
            self.future.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _run(self) -> None:
        channel = f"book.{self.symbol}"
        while not self.stopping.is_set():
            try:
                async with connect(self.url, open_timeout=3) as ws:
                    await ws.send(json.dumps({"type": "subscribe", "channels": [channel]}))
                    while not self.stopping.is_set():
                        try:
                            message = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                        except TimeoutError:
                            await ws.send(json.dumps({"type": "ping"}))
                            continue
                        if not self._apply(message):
                            self.resyncs += 1
                            self.sequence = None
                            await ws.send(json.dumps({"type": "subscribe", "channels": [channel]}))
            except (OSError, TimeoutError, Exception):  # the server went away: reconnect
                if self.stopping.is_set():
                    return
                self.resyncs += 1
                self.sequence = None
                await asyncio.sleep(0.3)

    def _apply(self, message: dict) -> bool:
        kind = message.get("type")
        if kind == "book.snapshot":
            for side in ("bids", "asks"):
                self.sides[side] = {D(p): D(q) for p, q in message[side]}
            self.sequence = message["sequence"]
        elif kind == "book.delta":
            if self.sequence is None or message["first_sequence"] != self.sequence + 1:
                return False
            for side in ("bids", "asks"):
                for price, quantity in message[side]:
                    if D(quantity) == 0:
                        self.sides[side].pop(D(price), None)
                    else:
                        self.sides[side][D(price)] = D(quantity)
            self.sequence = message["sequence"]
        return True

    def book(self) -> tuple:
        bids = sorted(self.sides["bids"].items(), reverse=True)
        asks = sorted(self.sides["asks"].items())
        return self.sequence, [[p, q] for p, q in bids], [[p, q] for p, q in asks]


def matcher_book(stack: Stack) -> tuple:
    raw = redis.Redis.from_url(stack.redis.url).get(book_key(stack.symbol))
    book = json.loads(raw)
    sides = ([[D(p), D(q)] for p, q in book[side]] for side in ("bids", "asks"))
    return (book["sequence"], *sides)


def run_drill(
    name: str,
    stack: Stack,
    wallets,
    market,
    fault: Callable[[], None],
    *,
    seed: int,
) -> dict:
    from tests.faults.support import OrderLoad

    total = int(CLIENTS * RATE_PER_CLIENT * (BEFORE + AFTER + 15))
    orders = signed_orders(wallets, market, total, seed=seed, tag=name)
    follower = BookFollower(stack.ws_url, stack.symbol).start()
    load = OrderLoad(
        stack.base_url, orders, clients=CLIENTS, rate_per_client=RATE_PER_CLIENT
    ).start()
    time.sleep(BEFORE)
    fault()
    fault_over = time.monotonic()
    time.sleep(AFTER)
    load.stop()
    outcomes = load.outcomes
    try:
        return check(name, stack, market, outcomes, follower, fault_over)
    finally:
        follower.stop()


def check(name, stack, market, outcomes: list[Outcome], follower, fault_over) -> dict:
    summary = summarize(outcomes)
    # 2. no wrong answers, nothing given up on, no 500s
    assert not summary["wrong"], summary["wrong"][:5]
    assert "500" not in summary["attempts"], summary["attempts"]
    assert summary["refused"].get("GAVE_UP", 0) == 0, summary
    assert summary["accepted"] > 0

    # 1. every accepted order is there once, under its id; no order nobody was told of
    accepted = {o.client_order_id: o.order_id for o in outcomes if o.order_id is not None}
    stored = dict(
        Order.objects.filter(market=market, client_order_id__startswith=f"{name}-").values_list(
            "client_order_id", "id"
        )
    )
    assert stored == accepted, {
        "missing": sorted(set(accepted) - set(stored))[:10],
        "unknown to clients": sorted(set(stored) - set(accepted))[:10],
        "different ids": [c for c in accepted if c in stored and stored[c] != accepted[c]][:10],
    }

    # 3. the matchers caught up
    wait_for(
        lambda: (
            not OrderCommand.objects.filter(market=market, status=CommandStatus.PENDING).exists()
        ),
        60,
        "every command to be applied",
        stack,
    )
    assert not Order.objects.filter(market=market, status=OrderStatus.PENDING).exists()

    # 4. ledger and books
    call_command("ledger_check")
    verified = subprocess.run(
        [sys.executable, "manage.py", "verify_books", "--market", stack.symbol, "--attempts", "20"],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # 5. the WebSocket client resynchronised and holds the matcher's book
    wait_for(lambda: follower.book() == matcher_book(stack), 30, "the client's book", stack)

    # 6. served again soon after the fault
    matched_after = [
        o.answered_at - fault_over
        for o in outcomes
        if o.answered_at and o.sent_at >= fault_over and o.status not in (None, "PENDING")
    ]
    assert matched_after, "no order was matched after the fault"
    recovery = min(matched_after)
    assert recovery < RECOVERY_LIMIT, recovery

    retryable = {k: v for k, v in summary["attempts"].items() if k not in ("200", "201")}
    RESULTS.append(
        f"{name:<28}{summary['orders']:>7}{summary['accepted']:>9}{summary['retried']:>8}"
        f"{sum(summary['refused'].values()):>8}{len(summary['wrong']):>6}{recovery:>11.2f}  "
        f"{dict(retryable) or '-'}; refusals {dict(summary['refused']) or '-'}; "
        f"WS resyncs {follower.resyncs}"
    )
    return summary


# --- the drills -----------------------------------------------------------------------


def test_matcher_killed(stack, wallets, market):
    def fault():
        owner = _owner_pid(stack)
        assert owner == stack.procs["matcher-a"].pid
        stack.kill("matcher-a")
        wait_for(
            lambda: _owner_pid(stack) == stack.procs["matcher-b"].pid,
            30,
            "the standby to take over",
            stack,
        )

    run_drill("matcher-kill", stack, wallets, market, fault, seed=1)


def test_web_killed(stack, wallets, market):
    def fault():
        stack.kill("web")
        time.sleep(1)
        stack.start_web()

    run_drill("web-kill", stack, wallets, market, fault, seed=2)


def test_celery_worker_killed(stack, wallets, market):
    from dex.celery import app

    start = datetime(2026, 1, 1, tzinfo=UTC)
    periods = [start + timedelta(minutes=n) for n in range(60)]

    def fault():
        with app.connection_for_write(stack.redis.url) as conn:
            for taken_at in periods:
                app.send_task(
                    "exchange.orderbook_snapshot_take",
                    args=[market.pk, taken_at.isoformat()],
                    connection=conn,
                )
        wait_for(
            lambda: OrderBookSnapshot.objects.filter(market=market, taken_at__gte=start).exists(),
            30,
            "the worker to start on the queue",
            stack,
        )
        stack.kill("worker")
        # What the killed worker had taken is handed out again once its visibility
        # timeout has passed: to the next worker that starts, or at a running
        # worker's next scan of the unacknowledged tasks.
        time.sleep(VISIBILITY_TIMEOUT + 1)
        stack.start_worker()

    run_drill("celery-worker-kill", stack, wallets, market, fault, seed=3)
    # Every task ran once: one snapshot per period, none lost to the killed worker.
    wait_for(
        lambda: (
            OrderBookSnapshot.objects.filter(market=market, taken_at__gte=start).count()
            == len(periods)
        ),
        60,
        "every queued snapshot task to run",
        stack,
    )
    taken = list(
        OrderBookSnapshot.objects.filter(market=market, taken_at__gte=start).values_list(
            "taken_at", flat=True
        )
    )
    assert sorted(taken) == periods


def test_redis_restarted(stack, wallets, market):
    def fault():
        stack.redis.kill()
        time.sleep(2)
        stack.redis.start()

    run_drill("redis-restart", stack, wallets, market, fault, seed=4)


def test_postgres_refuses_connections(stack, wallets, market):
    def fault():
        stack.proxy.refuse()
        time.sleep(3)
        stack.proxy.accept()

    run_drill("postgres-refuses-3s", stack, wallets, market, fault, seed=5)
