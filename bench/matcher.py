"""The matcher's persisted throughput and its journal-to-result latency.

    python bench/matcher.py                       # 5,000 orders drained, 10 s at 1,000/s
    python bench/matcher.py --orders 20000        # steadier figures (accepting is slow)
    python bench/matcher.py --orders 1500 --seconds 3      # quick look
    python bench/matcher.py --profile             # cProfile the drain, print the hotspots

It needs what the platform needs: ``DATABASE_URL``, ``REDIS_URL`` (the matcher
publishes to Redis) and ``DJANGO_SETTINGS_MODULE`` (default ``dex.settings.local``).
Without servers of your own:

    .venv/bin/python -m dex.devstack exec -- .venv/bin/python bench/matcher.py

The configured database is never written to: the bench creates ``dex_bench_matcher``
beside it (replacing a stale one), migrates it, and drops it at the end.

The workload, one market (ETH-USDC, tick 0.01, lot 0.001) and ``--traders`` funded
traders, drawn from a seeded generator: 65% limit orders (half of them priced through
the mid so that they trade, half resting up to 1% away), 25% cancels of earlier limit
orders, 10% market orders (sells by quantity, buys by quote amount). Every order and
cancel goes through ``order_place`` / ``order_cancel``.

1. Throughput. ``--orders`` commands are accepted first (timed apart: the accept
   rate, one durable transaction each, one thread), then ``MarketMatcher.run_batch``
   drains them in batches of ``--batch`` (default 500), each batch one transaction:
   commands persisted per second, and the trades written with them.
2. Latency. A real ``manage.py run_matcher`` process owns the market while one thread
   offers ``--rate`` orders per second for ``--seconds`` through the services. Per
   command, ``processed_at - created_at`` from the database. Both stamps are
   approximations of "commit to commit": ``created_at`` is ``now()`` in the order
   service's transaction, i.e. its *start* (so this adds the service's own time), and
   ``processed_at`` is the matcher's clock when it *began* the batch (so this leaves
   out the batch's persist and commit). A second column measures from the moment
   ``order_place`` returned in the offering thread (its commit) to ``processed_at``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DATABASE = "dex_bench_matcher"
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


def bench_database_create() -> str:
    """Create, migrate (``migrate``, via the test-database machinery) and switch to the
    bench's own database; return the configured database's name to switch back to."""
    from django.db import connection

    configured = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = BENCH_DATABASE
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return configured


def bench_database_drop(configured: str) -> None:
    from django.db import connection

    connection.creation.destroy_test_db(configured, verbosity=0)


def bench_database_url() -> str:
    """``DATABASE_URL`` with the bench's database in place of the configured one."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{BENCH_DATABASE}"))


class Workload:
    """Funded traders on one market, and a seeded stream of orders and cancels sent
    through the services."""

    def __init__(self, *, traders: int, seed: int) -> None:
        from exchange.models import Account, Asset, Market, MarketStatus
        from portfolio.services.vault import deposit_credit

        self.rng = random.Random(seed)
        self._ids = itertools.count(1)
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

    def send(self) -> tuple[str, int | None]:
        """Send the next order or cancel; returns its kind and its command's id (None
        when the service refused it, e.g. a cancel of an order already closed)."""
        from exchange.models import CommandKind, OrderCommand
        from exchange.services.orders import (
            OrderRejected,
            OrderRequest,
            order_cancel,
            order_place,
        )

        rng = self.rng
        draw = rng.random()
        trader = rng.choice(self.traders)
        if draw < 0.25 and self.limits:
            order = self.limits.pop(rng.randrange(len(self.limits)))
            try:
                return "cancel", order_cancel(account=order.account, order=order).pk
            except OrderRejected:
                return "cancel", None
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
            client_order_id=f"bench-{key}",
            nonce=key,
            signature=self._hex(65),
            order_hash=self._hex(32),
            **fields,
        )
        try:
            order = order_place(account=trader, market=self.market, request=request)
        except OrderRejected:
            return kind, None
        if kind == "limit":
            self.limits.append(order)
        command = OrderCommand.objects.filter(order=order, kind=CommandKind.PLACE).only("id")
        return kind, command.values_list("id", flat=True).first()


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

    matcher = MarketMatcher(workload.market)
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        batch_result = matcher.run_batch(limit=batch)
        if not batch_result.commands:
            break
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
    from_created_ms: list[float]
    from_return_ms: list[float]
    unprocessed: int


def matcher_process(batch: int) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=bench_database_url(), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "run_matcher", "--batch-limit", str(batch)],
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
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


def offer(workload: Workload, *, rate: float, seconds: float) -> Latency:
    """Send at ``rate`` per second from this thread, then wait for the matcher."""
    from django.utils import timezone

    from exchange.models import CommandStatus, OrderCommand

    returned: dict[int, datetime] = {}
    start = time.monotonic()
    total = 0
    # Stop at the deadline even when the services cannot keep up with ``rate``: the
    # achieved rate is printed beside the latency.
    while (now := time.monotonic()) - start < seconds:
        delay = start + total / rate - now
        if delay > 0:
            time.sleep(delay)
        _, command_id = workload.send()
        total += 1
        if command_id is not None:
            returned[command_id] = timezone.now()
    elapsed = time.monotonic() - start
    pending = OrderCommand.objects.filter(pk__in=list(returned), status=CommandStatus.PENDING)
    deadline = time.monotonic() + 30
    while pending.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = OrderCommand.objects.filter(pk__in=list(returned), status=CommandStatus.DONE)
    from_created, from_return = [], []
    for pk, created, processed in rows.values_list("pk", "created_at", "processed_at"):
        from_created.append((processed - created).total_seconds() * 1000)
        from_return.append((processed - returned[pk]).total_seconds() * 1000)
    return Latency(
        rate=rate,
        offered=total,
        seconds=elapsed,
        from_created_ms=from_created,
        from_return_ms=from_return,
        unprocessed=len(returned) - len(from_created),
    )


def profiled_drain(workload: Workload, result: Throughput, batch: int, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(drain, workload, result, batch)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    print(out.getvalue())


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
        ("created_at -> processed_at", lat.from_created_ms),
        ("service return -> processed_at", lat.from_return_ms),
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
        f"batches in {t.seconds:.2f}s. latency: {len(lat.from_created_ms):,} commands, "
        f"{lat.unprocessed} unprocessed)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Accepting runs at ~50-100 orders/s on a 2-core machine (order_place is ~15
    # queries), so 5,000 keeps the default run to a couple of minutes.
    parser.add_argument("--orders", type=int, default=5_000, help="commands to drain")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=float, default=1_000, help="offered orders/s")
    parser.add_argument("--seconds", type=float, default=10, help="latency run length")
    parser.add_argument("--traders", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile the drain")
    parser.add_argument("--top", type=int, default=25, help="profile rows to print")
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
            f"PostgreSQL {version}, database {BENCH_DATABASE} (created for this run), "
            f"{args.traders} traders, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f}",
            flush=True,
        )
        workload = Workload(traders=args.traders, seed=args.seed)
        print(f"accepting {args.orders:,} orders and cancels through the services ...", flush=True)
        throughput = preload(workload, args.orders)
        print(f"draining them with MarketMatcher.run_batch(limit={args.batch}) ...", flush=True)
        if args.profile:
            profiled_drain(workload, throughput, args.batch, args.top)
        else:
            drain(workload, throughput, args.batch)

        print(f"offering {args.rate:g}/s for {args.seconds:g}s to run_matcher ...", flush=True)
        matcher = matcher_process(args.batch)
        wait_owned(workload.market.pk)
        latency = offer(workload, rate=args.rate, seconds=args.seconds)
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
        p99 = percentile(latency.from_created_ms, 0.99)
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
