"""``manage.py run_matcher [--market SYMBOL ...]``: the matching worker."""

import signal

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.matcher.runner import Runner
from exchange.models import Market


class Command(BaseCommand):
    help = "Run the matcher for the named markets (all markets when none is named)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--market", action="append", dest="markets", metavar="SYMBOL")
        parser.add_argument("--poll-interval", type=float, default=0.2)
        parser.add_argument("--batch-limit", type=int, default=500)

    def handle(self, *args, markets, poll_interval, batch_limit, **options) -> None:
        if markets:
            # A misspelt symbol would leave its market without a matcher, silently.
            known = set(Market.objects.filter(symbol__in=markets).values_list("symbol", flat=True))
            missing = sorted(set(markets) - known)
            if missing:
                raise CommandError(f"no such market: {', '.join(missing)}")
        runner = Runner(markets, poll_interval=poll_interval, batch_limit=batch_limit)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: runner.stop.set())
        runner.run()
