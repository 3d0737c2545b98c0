"""The matcher's persisted throughput and its journal-to-result latency.

    python bench/matcher.py                       # 5,000 orders drained, 10 s at 1,000/s
    python bench/matcher.py --orders 20000        # steadier figures (accepting is slow)
    python bench/matcher.py --orders 1500 --seconds 3      # quick look
    python bench/matcher.py --profile             # cProfile the drain, print the hotspots
    python bench/matcher.py --sql-breakdown       # the drain's statements, commits and WAL
    python bench/matcher.py --positions-overhead  # drain with and without positions/stats
    python bench/matcher.py --placement-cost 4 --orders 2000   # accepting, as tables grow
    python bench/matcher.py --service-cost 3 --orders 500      # order_place's own cost

It needs what the platform needs: ``DATABASE_URL``, ``REDIS_URL`` (the matcher
publishes to Redis) and ``DJANGO_SETTINGS_MODULE`` (default ``dex.settings.local``).
Without servers of your own:

    .venv/bin/python -m dex.devstack exec -- .venv/bin/python bench/matcher.py

The configured database is never written to: the bench creates ``<it>_bench_matcher``
beside it (replacing a stale one), migrates it, and drops it at the end.

The workload, one market (ETH-USDC, tick 0.01, lot 0.001) and ``--traders`` funded
traders, drawn from a seeded generator: 65% limit orders (half of them priced through
the mid so that they trade, half resting up to 1% away), 25% cancels of earlier limit
orders, 10% market orders (sells by quantity, buys by quote amount).

1. Throughput. ``--orders`` commands are accepted first through ``order_place`` /
   ``order_cancel`` (timed apart: the accept rate, one durable transaction each, one
   thread), then ``MarketMatcher.run_batch`` drains them in batches of ``--batch``
   (default 500), each batch one transaction, under ``run_matcher``'s garbage
   collection policy (``freeze_long_lived`` after each batch): commands persisted per
   second, and the trades written with them.
   ``--positions-overhead`` measures what positions and trading statistics cost the
   drain: four rounds of ``--orders`` commands each, accepted and then drained, in the
   order without, with, with, without (so a drift of the machine or of the growing book
   weighs on both sides alike). "Without" replaces ``positions_apply`` in the ledger's
   settlement by a no-op for that round only; everything else is the matcher's path.
   It prints commands/s per round and the overhead, and skips the latency run.
2. Latency. A real ``manage.py run_matcher`` process owns the market while
   ``--processes`` processes offer ``--rate`` requests a second between them for
   ``--seconds``. The services cost ~10 ms of Python per order, so they cannot offer
   1,000 a second on a 2-core machine: each request is written by ``SqlDesk`` as the
   services write it (the order, its HOLD ledger transaction and postings, its command;
   a cancel's command after locking the live order), one transaction each, through the
   same triggers and NOTIFY. Two measures:
   - command commit -> result written: from the wall clock just after the command's
     commit returned to ``processed_at``, which the matcher stamps with
     ``clock_timestamp()`` in its batch's last statement before COMMIT (every command);
   - order commit -> reply in Redis: from the same moment to when the order's first
     reply, pushed by the matcher right after its COMMIT, is seen in Redis (placements;
     one thread BLPOPs all awaited reply keys) — what a placing request waits for.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import os
import pstats
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_SUFFIX = "_bench_matcher"
TARGET_PER_SECOND = 5_000
TARGET_P99_MS = 10.0
MID = Decimal("100")
D = Decimal


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dex.settings.local")
    import django
    from django.conf import settings

    django.setup()
    settings.DEBUG = False  # the debug cursor would log every query the bench makes


def bench_database_name() -> str:
    """``<configured database>_bench_matcher``: two benches against different databases
    never share one."""
    return urlsplit(os.environ["DATABASE_URL"]).path.lstrip("/") + BENCH_SUFFIX


def bench_database_create() -> str:
    """Create, migrate (``migrate``, via the test-database machinery) and switch to the
    bench's own database; return the configured database's name to switch back to."""
    from django.db import connection

    configured = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = bench_database_name()
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return configured


def bench_database_drop(configured: str) -> None:
    from django.db import connection

    connection.creation.destroy_test_db(configured, verbosity=0)


def bench_database_url() -> str:
    """``DATABASE_URL`` with the bench's database in place of the configured one."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{bench_database_name()}"))


class Workload:
    """Funded traders on one market, and a seeded stream of orders and cancels sent
    through the services (``send``) or written by the same rows in SQL (``SqlDesk``)."""

    def __init__(self, *, traders: int, seed: int) -> None:
        from exchange.models import Account, Asset, Market, MarketStatus
        from portfolio.services.vault import deposit_credit

        self.rng = random.Random(seed)
        self._ids = itertools.count(1)
        # Order keys differ from run to run, so a stale reply left in Redis by an
        # earlier run (replies live a minute) is never taken for this run's.
        self.run = f"{os.getpid():x}{int(time.time()) % 100_000:x}"
        base = Asset.objects.create(symbol="ETH", name="Ether", decimals=18)
        quote = Asset.objects.create(symbol="USDC", name="USD Coin", decimals=6)
        self.market = Market.objects.create(
            symbol="ETH-USDC",
            base=base,
            quote=quote,
            tick_size=D("0.01"),
            lot_size=D("0.001"),
            min_quantity=D("0.001"),
            min_notional=D("1"),
            maker_fee_rate=D("0.0002"),
            taker_fee_rate=D("0.0005"),
            status=MarketStatus.OPEN,
        )
        self.traders = Account.objects.bulk_create(
            [
                Account(wallet_address=self._hex(20), kyc_tier=1, country="GB")
                for _ in range(traders)
            ]
        )
        for trader in self.traders:
            for asset in (base, quote):
                deposit_credit(
                    account=trader,
                    asset=asset,
                    amount=D("1000000000"),
                    tx_hash=self._hex(32),
                    log_index=0,
                    block_number=1,
                )
        self.limits: list = []  # limit orders placed so far, for cancels to pick from

    def _hex(self, nbytes: int) -> str:
        return "0x" + f"{next(self._ids):x}".rjust(nbytes * 2, "0")

    def _price(self, offset_bps: float) -> Decimal:
        return (MID * (1 + D(repr(offset_bps)) / 10_000)).quantize(D("0.01"))

    def draw(self, rng: random.Random, limits: list, traders: Sequence) -> tuple:
        """The next request: ``("cancel", order)`` (an earlier limit order, taken from
        ``limits``) or ``(kind, trader, OrderRequest)``."""
        from exchange.services.orders import OrderRequest

        draw = rng.random()
        trader = rng.choice(traders)
        if draw < 0.25 and limits:
            return ("cancel", limits.pop(rng.randrange(len(limits))))
        side = rng.choice(("BUY", "SELL"))
        sign = 1 if side == "BUY" else -1
        quantity = D(rng.randint(20, 2_000)) * D("0.001")
        key = next(self._ids)
        fields: dict = {"side": side}
        if draw < 0.35:  # a market order
            kind = "market"
            fields["type"] = "MARKET"
            if side == "BUY":
                fields["quote_quantity"] = D(rng.randint(5, 200))
            else:
                fields["quantity"] = quantity
        else:
            kind = "limit"
            # Half through the mid (they trade), half resting up to 1% away.
            through = rng.random() < 0.5
            offset = rng.uniform(1, 30) if through else -rng.uniform(1, 100)
            fields.update(type="LIMIT", price=self._price(sign * offset), quantity=quantity)
        request = OrderRequest(
            client_order_id=f"b{self.run}-{key}",
            nonce=key,
            signature=self._hex(65),
            order_hash=self._hex(32),
            **fields,
        )
        return (kind, trader, request)

    def send(self) -> tuple[str, int | None]:
        """Send the next order or cancel through the services; returns its kind and its
        command's id (None when the service refused it, e.g. a cancel of an order
        already closed)."""
        from exchange.models import CommandKind, OrderCommand
        from exchange.services.orders import OrderRejected, order_cancel, order_place

        drawn = self.draw(self.rng, self.limits, self.traders)
        if drawn[0] == "cancel":
            order = drawn[1]
            try:
                return "cancel", order_cancel(account=order.account, order=order).pk
            except OrderRejected:
                return "cancel", None
        kind, trader, request = drawn
        try:
            order = order_place(account=trader, market=self.market, request=request)
        except OrderRejected:
            return kind, None
        if kind == "limit":
            self.limits.append(order)
        command = OrderCommand.objects.filter(order=order, kind=CommandKind.PLACE).only("id")
        return kind, command.values_list("id", flat=True).first()


# What order_place writes, as one statement (one round trip, its own transaction): the
# trader's two ledger accounts locked in key order (as the service and the matcher lock
# them), the PENDING order, its hold (a HOLD ledger transaction, available -> held) and
# its PLACE command. The tables' triggers and constraints check it all as they check
# the service's rows.
_PLACE = """
WITH locked AS (
    SELECT count(*) AS n FROM (
        SELECT id FROM portfolio_ledgeraccount
         WHERE id IN (%(available)s, %(held)s) ORDER BY id FOR UPDATE
    ) l
), o AS (
    INSERT INTO exchange_order
           (account_id, market_id, client_order_id, side, type, time_in_force, post_only,
            self_trade_prevention, price, quantity, remaining, quote_quantity,
            maker_fee_rate, taker_fee_rate, filled, filled_quote, status, reason, nonce,
            signature, order_hash, metadata)
    SELECT %(account)s, %(market)s, %(coid)s, %(side)s, %(type)s, %(tif)s, false,
           'EXPIRE_TAKER', %(price)s, %(quantity)s, %(quantity)s, %(quote_quantity)s,
           %(maker)s, %(taker)s, 0, 0, 'PENDING', '', %(nonce)s, %(signature)s,
           %(hash)s, '{}'
      FROM locked WHERE locked.n = 2
    RETURNING id
), t AS (
    INSERT INTO portfolio_ledgertransaction (kind, idempotency_key, description, order_id)
    SELECT 'HOLD', 'order:' || o.id || ':placed', '', o.id FROM o
    RETURNING id, order_id
), p AS (
    INSERT INTO portfolio_posting (transaction_id, ledger_account_id, amount, order_id)
    SELECT t.id, %(available)s, -%(hold)s::numeric, NULL FROM t
    UNION ALL
    SELECT t.id, %(held)s, %(hold)s::numeric, t.order_id FROM t
), c AS (
    INSERT INTO exchange_ordercommand (market_id, kind, account_id, order_id, payload, status)
    SELECT %(market)s, 'PLACE', %(account)s, o.id, '{}', 'PENDING' FROM o
    RETURNING id
)
SELECT o.id, c.id FROM o, c
"""
# order_cancel: the order locked while still live, then its CANCEL command.
_CANCEL = """
INSERT INTO exchange_ordercommand (market_id, kind, account_id, order_id, payload, status)
SELECT market_id, 'CANCEL', account_id, id, '{}', 'PENDING' FROM exchange_order
 WHERE id = %s AND status IN ('PENDING', 'OPEN', 'PARTIALLY_FILLED', 'UNTRIGGERED')
   FOR UPDATE
RETURNING id
"""


class SqlDesk:
    """Writes what ``order_place`` / ``order_cancel`` write, in SQL on a connection of
    its own: the services cost ~10 ms of Python per order, so a 2-core machine cannot
    offer 1,000 orders a second through them. The validation the services do first
    (signature, KYC, limits) is skipped; every row, trigger and NOTIFY is the same."""

    def __init__(self, workload: Workload, *, seed: int, traders: Sequence) -> None:
        import psycopg

        from exchange.models import Order, OrderStatus
        from portfolio.holds import order_hold_asset_id, order_hold_required
        from portfolio.services.ledger import ledger_accounts_ensure, trader_account_key

        self.workload = workload
        self.rng = random.Random(seed)
        self.traders = traders
        self.limits: list = []  # (order id, account id) of limit orders placed
        self.conn: psycopg.Connection | None = None  # opened by the process that sends
        self.url = bench_database_url().replace("postgres://", "postgresql://")
        market = workload.market
        self._hold = lambda order: (order_hold_asset_id(order), order_hold_required(order))
        self._order = lambda **kw: Order(market=market, status=OrderStatus.PENDING, **kw)
        keys = {
            (kind, asset, trader.pk): trader_account_key(kind, asset, trader.pk)
            for trader in traders
            for asset in (market.base_id, market.quote_id)
            for kind in ("AVAILABLE", "HELD")
        }
        ids = ledger_accounts_ensure(keys.values())
        self.accounts = {short: ids[key] for short, key in keys.items()}

    def send(self) -> tuple[str, int | None, int | None, float]:
        """Send the next request; returns its kind, command id, order id and the wall
        clock just after its transaction committed."""
        import psycopg

        market = self.workload.market
        drawn = self.workload.draw(self.rng, self.limits, self.traders)
        if self.conn is None:
            self.conn = psycopg.connect(self.url, autocommit=True)
        conn = self.conn
        if drawn[0] == "cancel":
            order_id, _ = drawn[1]
            row = conn.execute(_CANCEL, [order_id]).fetchone()
            return "cancel", row[0] if row else None, order_id, time.time()
        kind, trader, request = drawn
        order = self._order(
            account_id=trader.pk,
            side=request.side,
            type=request.type,
            price=request.price,
            quantity=request.quantity,
            remaining=request.quantity,
            quote_quantity=request.quote_quantity,
            taker_fee_rate=market.taker_fee_rate,
        )
        asset, hold = self._hold(order)
        available = self.accounts[("AVAILABLE", asset, trader.pk)]
        held = self.accounts[("HELD", asset, trader.pk)]
        order_id, command_id = conn.execute(
            _PLACE,
            {
                "account": trader.pk,
                "market": market.pk,
                "coid": request.client_order_id,
                "side": request.side,
                "type": request.type,
                "tif": "GTC" if request.type == "LIMIT" else "IOC",
                "price": request.price,
                "quantity": request.quantity,
                "quote_quantity": request.quote_quantity,
                "maker": market.maker_fee_rate,
                "taker": market.taker_fee_rate,
                "nonce": request.nonce,
                "signature": request.signature,
                "hash": request.order_hash,
                "available": available,
                "held": held,
                "hold": hold,
            },
        ).fetchone()
        committed = time.time()
        if kind == "limit":
            self.limits.append((order_id, trader.pk))
        return kind, command_id, order_id, committed

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@dataclass
class Throughput:
    sent: dict[str, int]
    accept_seconds: float
    commands: int = 0
    trades: int = 0
    batches: int = 0
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)


def preload(workload: Workload, count: int) -> Throughput:
    sent: dict[str, int] = {"limit": 0, "cancel": 0, "market": 0}
    t0 = time.perf_counter()
    for _ in range(count):
        kind, _ = workload.send()
        sent[kind] += 1
    return Throughput(sent=sent, accept_seconds=time.perf_counter() - t0)


def drain(workload: Workload, result: Throughput, batch: int) -> None:
    from exchange.matcher.market import MarketMatcher
    from exchange.matcher.runner import freeze_long_lived

    matcher = MarketMatcher(workload.market)
    freeze_long_lived()  # as run_matcher does after a rebuild and after each batch
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        batch_result = matcher.run_batch(limit=batch)
        if not batch_result.commands:
            break
        freeze_long_lived()
        result.batch_seconds.append(time.perf_counter() - t0)
        result.batches += 1
        result.commands += batch_result.commands
        result.trades += len(batch_result.trades)
    result.seconds = time.perf_counter() - started


@dataclass
class Latency:
    rate: float
    offered: int
    seconds: float
    from_commit_ms: list[float]  # command committed -> result's done-mark written
    reply_ms: list[float]  # order committed -> its reply visible in Redis (placements)
    unprocessed: int
    missing_replies: int


def matcher_process(batch: int) -> subprocess.Popen:
    """``run_matcher`` for the bench's database; its log goes to a temporary file (a pipe
    nobody reads fills up and stops the matcher mid-write)."""
    # DEBUG off, as in production: Django's debug cursor keeps every query's SQL.
    env = dict(os.environ, DATABASE_URL=bench_database_url(), PYTHONUNBUFFERED="1", DEBUG="0")
    with tempfile.TemporaryFile(mode="w+") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                sys.executable,
                str(BASE_DIR / "manage.py"),
                "run_matcher",
                "--batch-limit",
                str(batch),
            ],
            env=env,
            cwd=BASE_DIR,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )


def wait_owned(market_id: int, timeout: float = 60) -> None:
    """Until the matcher process holds the market's advisory lock (its book rebuilt)."""
    from django.db import connection

    from exchange.matcher.runner import LOCK_NAMESPACE

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
                " AND objid = %s AND granted",
                [LOCK_NAMESPACE, market_id],
            )
            if cursor.fetchone():
                return
        time.sleep(0.1)
    raise RuntimeError("the matcher process did not take the market")


class ReplyWatch:
    """Stamps the moment each placed order's first reply (``publish``: pushed right after
    the matcher's commit) appears in Redis: one thread blocked on every awaited reply
    key at once, woken whenever an offering thread adds one."""

    def __init__(self, client_order_prefix: str) -> None:
        import redis
        from django.conf import settings

        self.client = redis.Redis.from_url(settings.REDIS_URL)
        self.prefix = client_order_prefix
        self.wake = f"bench:matcher:wake:{os.getpid()}"
        self.awaited: dict[bytes, tuple[int, float]] = {}  # reply key -> (order, committed)
        self.seen: list[float] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def expect(self, order_id: int, committed: float) -> None:
        from exchange.matcher.publish import reply_key

        with self.lock:
            self.awaited[reply_key(order_id).encode()] = (order_id, committed)
        self.client.rpush(self.wake, 1)

    def _run(self) -> None:
        while not (self.done.is_set() and not self.awaited):
            with self.lock:
                # The wake-up key last: BLPOP pops from the first non-empty key given.
                keys = [*self.awaited, self.wake.encode()]
            popped = self.client.blpop(keys, timeout=0.1)
            now = time.time()
            if popped is None:
                continue
            if popped[0] == self.wake.encode():
                self.client.delete(self.wake)  # one wake-up for all the keys added since
                continue
            key, value = popped
            reply = json.loads(value)
            if not str(reply.get("client_order_id", "")).startswith(self.prefix):
                continue  # not this run's
            with self.lock:
                # None: given up on by finish() while this BLPOP was waiting.
                awaited = self.awaited.pop(key, None)
            if awaited is not None:
                self.seen.append((now - awaited[1]) * 1000)

    def finish(self, timeout: float) -> int:
        """Wait for the replies still awaited; returns how many never came."""
        deadline = time.monotonic() + timeout
        while self.awaited and time.monotonic() < deadline:
            time.sleep(0.05)
        self.done.set()
        with self.lock:
            missing = len(self.awaited)
            self.awaited.clear()
        self.thread.join(timeout=1)
        self.client.delete(self.wake)
        return missing


def _offer_from(desk: SqlDesk, index: int, n: int, schedule: tuple, out) -> None:
    """One offering process: its slots ``index``, ``index + n``, ... of the shared
    schedule (``rate`` a second from ``start`` on the wall clock, for ``seconds``)."""
    start, rate, seconds = schedule
    # Ids of this process's orders (nonce, hash) apart from every other's.
    desk.workload._ids = itertools.count(1_000_000_000 * (index + 1))
    sent = 0
    try:
        slot = index
        while (at := start + slot / rate) - start < seconds:
            delay = at - time.time()
            if delay > 0:
                time.sleep(delay)
            kind, command_id, order_id, committed = desk.send()
            sent += 1
            if command_id is not None:
                out.put((kind, command_id, order_id, committed))
            slot += n
    finally:
        desk.close()
        out.put(("done", sent, None, None))


def offer(workload: Workload, *, rate: float, seconds: float, processes: int, seed: int) -> Latency:
    """Offer ``rate`` requests a second for ``seconds`` from ``processes`` processes
    (each on its own traders and connection, on a shared clock; processes, not threads,
    so that they do not queue for one interpreter lock), then wait for the matcher."""
    import multiprocessing

    from django.db import connection

    from exchange.models import CommandStatus, OrderCommand

    groups = [workload.traders[i::processes] for i in range(processes)]
    desks = [SqlDesk(workload, seed=seed * 1000 + i, traders=g) for i, g in enumerate(groups)]
    connection.close()  # not inherited by the children (they use their own)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    schedule = (time.time() + 0.5, rate, seconds)
    workers = [
        context.Process(target=_offer_from, args=(desk, i, processes, schedule, out))
        for i, desk in enumerate(desks)
    ]
    for worker in workers:
        worker.start()
    watch = ReplyWatch(f"b{workload.run}-")  # a thread: started after the forks
    committed: dict[int, float] = {}
    offered, running = 0, processes
    while running:
        kind, command_id, order_id, when = out.get(timeout=seconds + 60)
        if kind == "done":
            offered += command_id
            running -= 1
            continue
        committed[command_id] = when
        if kind != "cancel":
            watch.expect(order_id, when)
    elapsed = time.time() - schedule[0]
    for worker in workers:
        worker.join()
        if worker.exitcode:
            raise RuntimeError(f"an offering process failed ({worker.exitcode})")
    missing = watch.finish(timeout=30)
    pending = OrderCommand.objects.filter(pk__in=list(committed), status=CommandStatus.PENDING)
    deadline = time.monotonic() + 30
    while pending.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = OrderCommand.objects.filter(pk__in=list(committed), status=CommandStatus.DONE)
    from_commit = [
        (processed.timestamp() - committed[pk]) * 1000
        for pk, processed in rows.values_list("pk", "processed_at")
    ]
    return Latency(
        rate=rate,
        offered=offered,
        seconds=elapsed,
        from_commit_ms=from_commit,
        reply_ms=watch.seen,
        unprocessed=len(committed) - len(from_commit),
        missing_replies=missing,
    )


def positions_overhead(workload: Workload, orders: int, batch: int) -> int:
    """Drain rounds with and without ``positions_apply`` (see the module doc); prints
    the table and returns the overhead in percent of the no-positions throughput."""
    from unittest import mock

    import portfolio.services.ledger as ledger

    rates: dict[bool, list[float]] = {False: [], True: []}
    print(
        f"{'round':<6}{'positions':<11}{'commands':>9}{'trades':>8}{'seconds':>9}{'commands/s':>12}"
    )
    for number, with_positions in enumerate((False, True, True, False), start=1):
        result = preload(workload, orders)
        if with_positions:
            drain(workload, result, batch)
        else:
            with mock.patch.object(ledger, "positions_apply", return_value=None):
                drain(workload, result, batch)
        rate = result.commands / result.seconds
        rates[with_positions].append(rate)
        print(
            f"{number:<6}{'on' if with_positions else 'off':<11}{result.commands:>9,}"
            f"{result.trades:>8,}{result.seconds:>9.2f}{rate:>12,.0f}",
            flush=True,
        )
    off = sum(rates[False]) / len(rates[False])
    on = sum(rates[True]) / len(rates[True])
    overhead = (off - on) / off * 100
    print(f"mean commands/s without positions {off:,.0f}, with {on:,.0f}: overhead {overhead:.1f}%")
    return round(overhead, 1)


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used, read from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def placement_cost(workload: Workload, *, rounds: int, requests: int, seed: int) -> None:
    """The database's cost of accepting requests on ONE long-lived connection, round
    after round, with no matcher (so every order stays and the tables grow): a cost
    that rises from round to round is a plan kept from when the tables were small. The
    CPU is the connection's backend process's, read from /proc (PostgreSQL on this
    machine)."""
    desk = SqlDesk(workload, seed=seed, traders=workload.traders)
    desk.send()
    pid = desk.conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def backend_cpu() -> float:
        return process_cpu(pid)

    print(
        f"{'round':<6}{'requests':>9}{'orders in table':>17}{'backend CPU/req':>17}{'wall/req':>10}"
    )
    placed = 1
    for number in range(1, rounds + 1):
        cpu, wall = backend_cpu(), time.perf_counter()
        for _ in range(requests):
            placed += desk.send()[0] != "cancel"
        cpu, wall = backend_cpu() - cpu, time.perf_counter() - wall
        print(
            f"{number:<6}{requests:>9,}{placed:>17,}{cpu / requests * 1000:>14.2f} ms"
            f"{wall / requests * 1000:>7.2f} ms",
            flush=True,
        )
    desk.close()


def service_cost(workload: Workload, *, rounds: int, requests: int) -> None:
    """What accepting costs through the services themselves (``order_place`` /
    ``order_cancel``, as the API and the simulator call them), no matcher: per request,
    the wall time, this process's CPU (Python and the driver) and the CPU of the Django
    connection's backend process (PostgreSQL on this machine, from /proc)."""
    from django.db import connection

    workload.send()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]

    def backend_cpu() -> float:
        return process_cpu(pid)

    print(f"{'round':<6}{'requests':>9}{'wall/req':>11}{'Python/req':>13}{'backend/req':>14}")
    for number in range(1, rounds + 1):
        cpu, own, wall = backend_cpu(), time.process_time(), time.perf_counter()
        for _ in range(requests):
            workload.send()
        cpu, own = backend_cpu() - cpu, time.process_time() - own
        wall = time.perf_counter() - wall
        print(
            f"{number:<6}{requests:>9,}{wall / requests * 1000:>8.2f} ms"
            f"{own / requests * 1000:>10.2f} ms{cpu / requests * 1000:>11.2f} ms",
            flush=True,
        )


def profiled_drain(workload: Workload, result: Throughput, batch: int, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(drain, workload, result, batch)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    print(out.getvalue())


def statement_kind(sql: str) -> str:
    """A statement's first words, enough to tell the drain's statements apart."""
    return " ".join(sql.split())[:72]


def sql_breakdown_drain(workload: Workload, result: Throughput, batch: int, top: int) -> None:
    """``drain`` with the database's share of it measured: each statement's time by kind,
    the commits' time (the deferred checks PostgreSQL runs at COMMIT and the WAL flush)
    and the WAL the drain wrote. What is left of the drain's time is Python's."""
    from collections import Counter

    from django.db import connection

    seconds: Counter[str] = Counter()
    calls: Counter[str] = Counter()

    def timed(execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            kind = statement_kind(sql)
            seconds[kind] += time.perf_counter() - t0
            calls[kind] += 1

    connection.ensure_connection()
    commit = connection._commit  # this wrapper's, for this drain only
    committing = [0.0]

    def timed_commit():
        t0 = time.perf_counter()
        try:
            return commit()
        finally:
            committing[0] += time.perf_counter() - t0

    def wal_position() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
            return int(cursor.fetchone()[0])

    wal_before = wal_position()
    connection._commit = timed_commit
    try:
        with connection.execute_wrapper(timed):
            drain(workload, result, batch)
    finally:
        del connection._commit
    wal = wal_position() - wal_before
    statements, commits = sum(seconds.values()), committing[0]
    total = result.seconds
    print(
        f"drain {total * 1000:,.0f} ms: statements {statements * 1000:,.0f} ms "
        f"({statements / total:.0%}), commits {commits * 1000:,.0f} ms ({commits / total:.0%}), "
        f"the rest (Python) {(total - statements - commits) * 1000:,.0f} ms "
        f"({(total - statements - commits) / total:.0%}); WAL {wal / 1e6:,.1f} MB "
        f"({wal / max(result.commands, 1):,.0f} bytes a command)"
    )
    print(f"{'ms':>9} {'calls':>6}  statement")
    for kind, spent in seconds.most_common(top):
        print(f"{spent * 1000:9.1f} {calls[kind]:6,}  {kind}")


def print_table(t: Throughput, lat: Latency) -> None:
    accepted = sum(t.sent.values())
    rows = [
        ("accept (order_place/order_cancel, 1 thread)", f"{accepted / t.accept_seconds:,.0f}/s"),
        ("drain: commands persisted", f"{t.commands / t.seconds:,.0f}/s"),
        ("drain: trades persisted", f"{t.trades / t.seconds:,.0f}/s"),
        (
            "drain: batch time p50 / p99 (ms)",
            f"{percentile(t.batch_seconds, 0.5) * 1000:.1f} / "
            f"{percentile(t.batch_seconds, 0.99) * 1000:.1f}",
        ),
        (
            "latency: offered / achieved rate",
            f"{lat.rate:,.0f}/s / {lat.offered / lat.seconds:,.0f}/s",
        ),
    ]
    for label, values in (
        ("command commit -> result written", lat.from_commit_ms),
        ("order commit -> reply in Redis", lat.reply_ms),
    ):
        rows.append(
            (
                f"latency {label} p50/p99/max (ms)",
                f"{percentile(values, 0.5):.1f} / {percentile(values, 0.99):.1f} / "
                f"{max(values, default=0):.1f}",
            )
        )
    width = max(len(label) for label, _ in rows)
    print(f"{'measure':<{width}}  value")
    print("-" * (width + 24))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print(
        f"(drain: {t.commands:,} commands = {t.sent['limit']:,} limit, {t.sent['market']:,} "
        f"market, {t.sent['cancel']:,} cancel requests; {t.trades:,} trades; {t.batches} "
        f"batches in {t.seconds:.2f}s. latency: {len(lat.from_commit_ms):,} commands, "
        f"{lat.unprocessed} unprocessed; {len(lat.reply_ms):,} placement replies, "
        f"{lat.missing_replies} missing)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Accepting runs at ~50-100 orders/s on a 2-core machine (order_place is ~15
    # queries), so 5,000 keeps the default run to a couple of minutes.
    parser.add_argument("--orders", type=int, default=5_000, help="commands to drain")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=float, default=1_000, help="offered orders/s")
    parser.add_argument("--seconds", type=float, default=10, help="latency run length")
    parser.add_argument(
        "--processes", type=int, default=4, help="processes offering orders for latency"
    )
    parser.add_argument("--traders", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile the drain")
    parser.add_argument("--top", type=int, default=25, help="profile rows to print")
    parser.add_argument(
        "--sql-breakdown",
        action="store_true",
        help="time the drain's statements and commits, and the WAL it writes",
    )
    parser.add_argument(
        "--placement-cost",
        type=int,
        metavar="ROUNDS",
        help="ROUNDS of --orders requests on one connection, no matcher: the database's"
        " CPU per request as the tables grow, and stop",
    )
    parser.add_argument(
        "--service-cost",
        type=int,
        metavar="ROUNDS",
        help="ROUNDS of --orders requests through order_place/order_cancel, no matcher:"
        " wall, Python and database CPU per request, and stop",
    )
    parser.add_argument(
        "--positions-overhead",
        action="store_true",
        help="drain with and without position/statistics updates, compare, and stop",
    )
    args = parser.parse_args(argv)

    setup_django()
    from django.db import connection

    configured = bench_database_create()
    matcher = None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        print(
            f"PostgreSQL {version}, database {bench_database_name()} (created for this run), "
            f"{args.traders} traders, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f}",
            flush=True,
        )
        workload = Workload(traders=args.traders, seed=args.seed)
        if args.placement_cost:
            placement_cost(
                workload, rounds=args.placement_cost, requests=args.orders, seed=args.seed
            )
            return 0
        if args.service_cost:
            service_cost(workload, rounds=args.service_cost, requests=args.orders)
            return 0
        if args.positions_overhead:
            overhead = positions_overhead(workload, args.orders, args.batch)
            from portfolio.reconciliation import ledger_check

            # The rounds without positions left the positions short of their trades on
            # purpose: those two kinds of discrepancy are expected, the rest are not.
            problems = [
                p
                for p in ledger_check()
                if not p.rule.startswith(("position is not", "trading statistics are not"))
            ]
            print("ledger_check (money and holds): " + ("passed" if not problems else "FAILED"))
            for problem in problems[:20]:
                print(f"  {problem}")
            print(f"positions and statistics overhead, goal under 20%: {overhead}%")
            return 0 if not problems else 1
        print(f"accepting {args.orders:,} orders and cancels through the services ...", flush=True)
        throughput = preload(workload, args.orders)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # statistics, as a database in service has them
        print(f"draining them with MarketMatcher.run_batch(limit={args.batch}) ...", flush=True)
        if args.profile:
            profiled_drain(workload, throughput, args.batch, args.top)
        elif args.sql_breakdown:
            sql_breakdown_drain(workload, throughput, args.batch, args.top)
        else:
            drain(workload, throughput, args.batch)

        with connection.cursor() as cursor:
            # Every command is done now: autovacuum analyses the journal after 1,000
            # changes (this machine's PostgreSQL runs without it). With statistics that
            # still say every command is pending the planner has no reason to prefer
            # the pending-command index to walking the journal by primary key (~0.9 ms
            # a batch on these 3,000 commands, growing with the journal).
            cursor.execute("ANALYZE")
        print(f"offering {args.rate:g}/s for {args.seconds:g}s to run_matcher ...", flush=True)
        matcher = matcher_process(args.batch)
        wait_owned(workload.market.pk)
        latency = offer(
            workload,
            rate=args.rate,
            seconds=args.seconds,
            processes=args.processes,
            seed=args.seed,
        )
        matcher.terminate()
        matcher.wait(timeout=30)

        from portfolio.reconciliation import ledger_check

        print()
        print_table(throughput, latency)
        print(f"(load average {os.getloadavg()[0]:.2f} at the end of the run)")
        problems = ledger_check()
        print(
            "ledger_check: "
            + ("passed" if not problems else f"FAILED ({len(problems)} discrepancies)")
        )
        for problem in problems[:20]:
            print(f"  {problem}")
        per_second = throughput.commands / throughput.seconds
        p99 = max(percentile(latency.from_commit_ms, 0.99), percentile(latency.reply_ms, 0.99))
        if per_second < TARGET_PER_SECOND:
            print(f"drain is under {TARGET_PER_SECOND:,}/s: run with --profile")
        if p99 >= TARGET_P99_MS:
            print(f"p99 latency is not under {TARGET_P99_MS:g} ms")
        return 0 if not problems else 1
    finally:
        if matcher is not None and matcher.poll() is None:
            matcher.kill()
            matcher.wait()
        connection.close()
        bench_database_drop(configured)


if __name__ == "__main__":
    sys.exit(main())
