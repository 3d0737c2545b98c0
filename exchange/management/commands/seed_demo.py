"""``manage.py seed_demo``: demo markets, traders and a staff login for local use."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.services.demo import demo_seed, demo_wallet


class Command(BaseCommand):
    help = "Create demo markets, traders with wallets and a staff user (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--password-file",
            type=Path,
            default=settings.BASE_DIR / ".data" / "demo-admin-password",
            help="Where the staff password is kept between runs (created if missing). "
            "DEMO_ADMIN_PASSWORD, when set, wins.",
        )

    def handle(self, *args, password_file: Path, **options) -> None:
        if not settings.DEMO_DATA_ALLOWED:
            raise CommandError("Demo data is disabled in this environment (DEMO_DATA_ALLOWED).")
        password = os.environ.get("DEMO_ADMIN_PASSWORD") or self._stored_password(password_file)
        result = demo_seed(staff_password=password)

        self.stdout.write(f"Demo data ready ({result.created} new rows).")
        self.stdout.write("  markets: " + ", ".join(m.symbol for m in result.markets))
        for index, trader in enumerate(result.traders, start=1):
            self.stdout.write(f"  trader {index}: {trader.label:<22} {demo_wallet(index).address}")
        self.stdout.write(
            self.style.SUCCESS(f"  staff login: {result.staff_username} / {password}")
        )

    @staticmethod
    def _stored_password(path: Path) -> str:
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(12)
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password
