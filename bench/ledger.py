"""Trade settlements per second: each fill settled by ``trade_settle`` in its own
durable transaction, and many per transaction through ``trade_settle_many`` as the
matcher persists a batch.

    python bench/ledger.py                          # 1,000 settlements per mode (~40 s)
    python bench/ledger.py --trades 10000           # steadier figures
    python bench/ledger.py --batch-sizes 50,100,500,1000
    python bench/ledger.py --profile                # cProfile the largest batch size

It needs what the platform needs: ``DATABASE_URL`` and ``REDIS_URL`` (Redis is only
read by the settings), ``DJANGO_SETTINGS_MODULE`` (default ``dex.settings.local``;
the debug cursor is switched off either way, since it would record every query).
Without a PostgreSQL of your own, ``dex.devstack`` provides an embedded one:

    .venv/bin/python -m dex.devstack exec -- .venv/bin/python bench/ledger.py

The configured database is never written to. The bench creates its own database
beside it (``dex_bench_ledger``, replacing a stale one left by an interrupted run;
the database user needs CREATEDB), migrates it, and drops it at the end.

Untimed: traders are funded through ``deposit_credit``; for every fill a resting
sell and a crossing buy (limit a tick above, so the buyer's price improvement flows
back) are written PENDING, their holds placed by ``holds_sync_many``, marked FILLED
(an order's status may go straight from PENDING to FILLED), and the trades written
in bulk as the matcher writes them. Timed: settling them. A ``batched`` row's time
includes loading each batch with ``trades_for_settlement``; the ``in-memory`` row
(the largest batch size again, on fresh trades) passes the trades as they are, as
the matcher passes the ones it has just written. Every time includes the commit,
where PostgreSQL checks that each ledger transaction balances and the deferred
foreign keys hold. ``ledger_check`` runs at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import itertools
import os
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BENCH_DATABASE = "dex_bench_ledger"
TARGET_PER_SECOND = 3_000
D = Decimal


@dataclass(frozen=True, slots=True)
class Result:
    mode: str
    batch: int
    settlements: int
    seconds: float
    latencies: list[float]  # per settlement (single) or per batch (batched), seconds

    @property
    def per_second(self) -> float:
        return self.settlements / self.seconds


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dex.settings.local")
    import django
    from django.conf import settings

    django.setup()
    settings.DEBUG = False  # the debug cursor would log every query the bench makes


def bench_database_create() -> str:
    """Create, migrate and switch to the bench's own database; return the configured
    database's name so that it can be switched back."""
    from django.db import connection

    configured = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = BENCH_DATABASE
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return configured


def bench_database_drop(configured: str) -> None:
    from django.db import connection

    connection.creation.destroy_test_db(configured, verbosity=0)


class Seeder:
    """Markets, funded traders, and filled orders with their trades, made in bulk."""

    def __init__(self, *, traders: int) -> None:
        from exchange.models import Account, Asset, Market, MarketStatus
        from portfolio.services.vault import deposit_credit

        self._ids = itertools.count(1)
        self._sequence = itertools.count(1)  # the market's trade numbers
        self.base = Asset.objects.create(symbol="ETH", name="Ether", decimals=18)
        self.quote = Asset.objects.create(symbol="USDC", name="USD Coin", decimals=6)
        self.market = Market.objects.create(
            symbol="ETH-USDC",
            base=self.base,
            quote=self.quote,
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
            for asset in (self.base, self.quote):
                deposit_credit(
                    account=trader,
                    asset=asset,
                    amount=D("100000000"),
                    tx_hash=self._hex(32),
                    log_index=0,
                    block_number=1,
                )

    def _hex(self, nbytes: int) -> str:
        return "0x" + f"{next(self._ids):x}".rjust(nbytes * 2, "0")

    def trades(self, count: int) -> list:
        """``count`` fills, unsettled, each between a resting sell at 100 and a buy
        limited at 100.01 from two different traders, of 0.5 to 2 base."""
        from django.db import transaction
        from django.db.models import F
        from django.utils import timezone

        from exchange.models import Order, OrderStatus, OrderType, Side, TimeInForce, Trade
        from portfolio.holds import fee_amount
        from portfolio.models import TransactionKind
        from portfolio.services.ledger import holds_sync_many

        market, n = self.market, len(self.traders)
        quantities = [D("0.5"), D("1"), D("1.5"), D("2")]

        def order(account, side: str, price: Decimal, quantity: Decimal) -> Order:
            key = next(self._ids)
            return Order(
                account=account,
                market=market,
                client_order_id=f"bench-{key}",
                side=side,
                type=OrderType.LIMIT,
                time_in_force=TimeInForce.GTC,
                price=price,
                quantity=quantity,
                remaining=quantity,
                maker_fee_rate=market.maker_fee_rate,
                taker_fee_rate=market.taker_fee_rate,
                nonce=key,
                signature=self._hex(65),
                order_hash=self._hex(32),
            )

        pairs = []
        for i in range(count):
            seller, buyer = self.traders[i % n], self.traders[(i * 7 + 1) % n]
            if seller == buyer:
                buyer = self.traders[(i + 1) % n]
            quantity = quantities[i % len(quantities)]
            pairs.append(
                (
                    order(seller, Side.SELL, D("100"), quantity),
                    order(buyer, Side.BUY, D("100.01"), quantity),
                )
            )
        orders = [o for pair in pairs for o in pair]
        created = []
        for start in range(0, len(orders), 1000):
            with transaction.atomic():
                chunk = Order.objects.bulk_create(orders[start : start + 1000])
                holds_sync_many(chunk, kind=TransactionKind.HOLD, cause="placed")
            created += chunk

        # Every order fills completely at the resting price of 100 (the buy's limit is
        # above it), so one statement per chunk brings them all to FILLED.
        now = timezone.now()
        for start in range(0, len(created), 1000):
            Order.objects.filter(pk__in=[o.pk for o in created[start : start + 1000]]).update(
                status=OrderStatus.FILLED,
                sequence=F("id"),
                accepted_at=now,
                done_at=now,
                filled=F("quantity"),
                remaining=D(0),
                filled_quote=F("quantity") * D("100"),
                average_price=D("100"),
            )
        for o in created:  # the copies in memory, as the matcher holds them after the fill
            o.status, o.sequence, o.accepted_at, o.done_at = OrderStatus.FILLED, o.pk, now, now
            o.filled, o.remaining = o.quantity, D(0)
            o.filled_quote, o.average_price = o.quantity * D("100"), D("100")

        trades = []
        for maker, taker in pairs:
            notional = maker.quantity * maker.price
            trades.append(
                Trade(
                    market=market,
                    sequence=next(self._sequence),
                    maker_order=maker,
                    taker_order=taker,
                    buyer_id=taker.account_id,
                    seller_id=maker.account_id,
                    aggressor_side=Side.BUY,
                    price=maker.price,
                    quantity=maker.quantity,
                    quote_quantity=notional,
                    maker_fee=fee_amount(notional, maker.maker_fee_rate),
                    taker_fee=fee_amount(notional, taker.taker_fee_rate),
                    maker_remaining=D(0),
                    taker_remaining=D(0),
                )
            )
        return Trade.objects.bulk_create(trades, batch_size=1000)


def settle_single(trades: list) -> Result:
    from portfolio.services.ledger import trade_settle

    latencies = []
    started = time.perf_counter()
    for trade in trades:
        t0 = time.perf_counter()
        trade_settle(trade=trade)
        latencies.append(time.perf_counter() - t0)
    return Result("single", 1, len(trades), time.perf_counter() - started, latencies)


def settle_batched(trades: list, batch: int, *, in_memory: bool = False) -> Result:
    """Batches loaded by ``trades_for_settlement``, or (``in_memory``) passed as they
    are, with their market and orders attached, as the matcher passes the trades it
    has just written."""
    from django.db import transaction

    from portfolio.services.ledger import trade_settle_many, trades_for_settlement

    latencies = []
    started = time.perf_counter()
    for start in range(0, len(trades), batch):
        chunk = trades[start : start + batch]
        t0 = time.perf_counter()
        with transaction.atomic():
            if not in_memory:
                chunk = trades_for_settlement([t.pk for t in chunk])
            trade_settle_many(trades=chunk)
        latencies.append(time.perf_counter() - t0)
    mode = "in-memory" if in_memory else "batched"
    return Result(mode, batch, len(trades), time.perf_counter() - started, latencies)


def all_settled(trades: list) -> bool:
    from exchange.models import SettlementStatus, Trade
    from portfolio.models import LedgerTransaction

    ids = [t.pk for t in trades]
    unsettled = Trade.objects.filter(pk__in=ids).exclude(settlement_status=SettlementStatus.SETTLED)
    return not unsettled.exists() and LedgerTransaction.objects.filter(
        trade_id__in=ids
    ).count() == len(ids)


def profiled(run: Callable[[], Result], top: int) -> Result:
    profiler = cProfile.Profile()
    result = profiler.runcall(run)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(out.getvalue())
    return result


def print_table(results: list[Result]) -> None:
    header = (
        f"{'mode':<9} {'batch':>5} {'settlements':>11} {'seconds':>8} {'settlements/s':>13} "
        f"{'p50 ms':>8} {'p99 ms':>8}  latency of"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.mode:<9} {r.batch:>5} {r.settlements:>11,} {r.seconds:>8.2f} "
            f"{r.per_second:>13,.0f} {percentile(r.latencies, 0.50) * 1000:>8.2f} "
            f"{percentile(r.latencies, 0.99) * 1000:>8.2f}  "
            f"{'one settlement' if r.mode == 'single' else 'one batch'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=1_000, help="settlements per mode")
    parser.add_argument("--batch-sizes", default="100,500", help="comma-separated")
    parser.add_argument("--traders", type=int, default=20)
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the largest batch size's run"
    )
    args = parser.parse_args(argv)
    batch_sizes = sorted(int(b) for b in args.batch_sizes.split(","))

    setup_django()
    from django.db import connection

    configured = bench_database_create()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        print(
            f"PostgreSQL {version}, database {BENCH_DATABASE} (created for this run), "
            f"{args.traders} traders, {args.trades:,} settlements per mode; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; seeding ...",
            flush=True,
        )
        seeder = Seeder(traders=args.traders)
        t0 = time.perf_counter()
        # single, then each batch size, then the largest again with the trades in memory
        seeded = [seeder.trades(args.trades) for _ in range(len(batch_sizes) + 2)]
        print(f"seeded {len(seeded) * args.trades:,} trades in {time.perf_counter() - t0:.1f}s")

        results = [settle_single(seeded[0])]
        for size, trades in zip(batch_sizes, seeded[1:], strict=False):
            run = functools.partial(settle_batched, trades, size)
            profile = args.profile and size == batch_sizes[-1]
            results.append(profiled(run, top=25) if profile else run())
        results.append(settle_batched(seeded[-1], batch_sizes[-1], in_memory=True))
        settled = all(all_settled(trades) for trades in seeded)

        from portfolio.reconciliation import ledger_check

        print()
        print_table(results)
        print(f"(load average {os.getloadavg()[0]:.2f} at the end of the run)")
        print()
        problems = ledger_check()
        print(f"every trade settled exactly once: {'yes' if settled else 'NO'}")
        print(
            "ledger_check: "
            + ("passed" if not problems else f"FAILED ({len(problems)} discrepancies)")
        )
        for problem in problems[:20]:
            print(f"  {problem}")
        best = max(r.per_second for r in results if r.mode == "batched")
        if best < TARGET_PER_SECOND:
            print(f"batched throughput is under {TARGET_PER_SECOND:,}/s: run with --profile")
        return 0 if settled and not problems else 1
    finally:
        bench_database_drop(configured)


if __name__ == "__main__":
    sys.exit(main())
