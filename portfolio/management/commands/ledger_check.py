"""``manage.py ledger_check``: prove the books; exit 1 naming every difference."""

from django.core.management.base import BaseCommand, CommandError

from dex.metrics import ledger_check_record
from portfolio.models import LedgerAccount, Posting
from portfolio.reconciliation import ledger_check


class Command(BaseCommand):
    help = (
        "Check that every asset's ledger sums to zero, every balance equals its postings, "
        "every hold equals the worst-case cost of its open orders and withdrawals (in the "
        "asset each order pays with), positions and trading statistics add up to the "
        "settled trades, each settled trade moved exactly its terms and each fee account "
        "holds its trades' fees, and the vault and adjustment accounts answer for every "
        "completed deposit, withdrawal and posted adjustment."
    )

    def handle(self, *args, **options) -> None:
        problems = ledger_check()
        ledger_check_record(problems=len(problems))  # for /metrics
        self.stdout.write(
            f"checked {LedgerAccount.objects.count()} ledger accounts, "
            f"{Posting.objects.count()} postings"
        )
        if problems:
            for problem in problems:
                self.stderr.write(f"  ✗ {problem}")
            raise CommandError(f"ledger check failed: {len(problems)} difference(s)")
        self.stdout.write(self.style.SUCCESS("ledger check passed"))
