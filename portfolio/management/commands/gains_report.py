"""``manage.py gains_report --account ID --year YYYY [--output FILE]``: an account's
realized gains (FIFO lots) for a year, as CSV."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from exchange.models import Account
from portfolio.reports import gains_csv_write, realized_gains


class Command(BaseCommand):
    help = "Write an account's realized gains for a calendar year (UTC, FIFO lots) as CSV."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--account", type=int, required=True, help="Account id.")
        parser.add_argument("--year", type=int, required=True)
        parser.add_argument("--output", type=Path, help="Write here instead of stdout.")

    def handle(self, *args, account: int, year: int, output: Path | None, **options) -> None:
        found = Account.objects.filter(pk=account).first()
        if found is None:
            raise CommandError(f"no account {account}")
        if not 1970 <= year <= 9998:
            raise CommandError(f"year {year} is out of range")
        rows = realized_gains(account=found, year=year)
        if output is None:
            gains_csv_write(rows, self.stdout)
            return
        with output.open("w", newline="") as out:
            gains_csv_write(rows, out)
        self.stderr.write(f"{len(rows)} rows written to {output}")
