"""``manage.py verify_books [--market SYMBOL ...]``: prove the matchers' books and the
ledger right; exits non-zero listing every difference."""

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.matcher.verification import books_verify


class Command(BaseCommand):
    help = (
        "Compare each market's book snapshot in Redis with its open orders in PostgreSQL, "
        "and run the ledger check."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--market", action="append", dest="markets", metavar="SYMBOL")
        parser.add_argument(
            "--attempts",
            type=int,
            default=3,
            help="Checks before concluding: a live matcher publishes just after it commits.",
        )
        parser.add_argument("--interval", type=float, default=0.5)

    def handle(self, *args, markets, attempts, interval, **options) -> None:
        for attempt in range(max(1, attempts)):
            if attempt:
                time.sleep(interval)
            differences = books_verify(markets)
            if not differences:
                self.stdout.write("books verified: no differences")
                return
        for difference in differences:
            self.stderr.write(difference)
        raise CommandError(f"{len(differences)} difference(s) between the books and the database")
