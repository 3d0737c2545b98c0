"""``manage.py simulate_market [--market SYMBOL ...] [--rate N] [--duration S] [--seed N]``:
demo traders making and taking on the demo markets, through the order services."""

import logging
import signal
import threading
import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.simulator import SimulatorStats, simulator_for_demo

log = logging.getLogger("exchange.simulator")

LOG_EVERY_SECONDS = 10.0


class Command(BaseCommand):
    help = (
        "Trade the demo traders on the open markets: a market maker quoting around a "
        "drifting price and takers crossing it (run seed_demo first)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--market",
            action="append",
            dest="markets",
            metavar="SYMBOL",
            help="a market to trade (repeatable; default: every open market)",
        )
        parser.add_argument("--rate", type=float, default=5.0, help="orders and cancels per second")
        parser.add_argument(
            "--duration", type=float, default=0, help="seconds to run (0: until stopped)"
        )
        parser.add_argument("--seed", type=int, default=None, help="seed the random choices")

    def handle(self, *args, markets, rate, duration, seed, **options) -> None:
        if rate <= 0:
            raise CommandError("--rate must be positive")
        try:
            simulator = simulator_for_demo(symbols=markets, seed=seed)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

        symbols = ", ".join(s.market.symbol for s in simulator.states)
        length = f"for {duration:g}s" if duration else "until stopped"
        self.stdout.write(f"Simulating {symbols} at {rate:g} orders/s {length}.")
        interactive = self.stdout.isatty()
        started = time.monotonic()
        last_log = [started]

        def progress(stats: SimulatorStats) -> None:
            elapsed = time.monotonic() - started
            clock = f"{elapsed:.0f}s" + (f"/{duration:g}s" if duration else "")
            if interactive:  # one line, rewritten in place
                self.stdout.write(f"\r\x1b[2K{clock}  {stats.summary()}", ending="")
                self.stdout.flush()
            elif time.monotonic() - last_log[0] >= LOG_EVERY_SECONDS:
                last_log[0] = time.monotonic()
                self.stdout.write(f"{clock}  {stats.summary()}")

        stats = simulator.run(
            rate=rate, duration=duration, progress=progress, should_stop=stop.is_set
        )
        if interactive:
            self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Done: {stats.summary()}"))
