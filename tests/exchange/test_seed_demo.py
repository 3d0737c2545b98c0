"""``manage.py seed_demo`` gives a fresh machine something to trade, and is safe to
run again."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from exchange.models import Account, Market, MarketStatus
from exchange.services.demo import DEMO_FUNDS, DEMO_MARKETS, DEMO_TRADERS, demo_wallet
from portfolio.models import Balance
from portfolio.reconciliation import ledger_check

pytestmark = pytest.mark.django_db


def seed(tmp_path, capsys) -> str:
    call_command("seed_demo", password_file=tmp_path / "password")
    return capsys.readouterr().out


def test_seed_creates_open_markets_traders_with_wallets_and_a_staff_login(tmp_path, capsys):
    out = seed(tmp_path, capsys)
    assert Market.objects.filter(status=MarketStatus.OPEN).count() == len(DEMO_MARKETS)
    assert {"ETH-USDC", "BTC-USDC"} <= set(Market.objects.values_list("symbol", flat=True))
    assert Account.objects.count() == len(DEMO_TRADERS)
    for index in range(1, len(DEMO_TRADERS) + 1):
        assert Account.objects.filter(wallet_address=demo_wallet(index).address.lower()).exists()

    password = (tmp_path / "password").read_text().strip()
    assert f"staff login: admin / {password}" in out
    staff = get_user_model().objects.get(username="admin")
    assert staff.is_staff
    assert staff.check_password(password)


def test_demo_traders_start_with_funds_to_trade(tmp_path, capsys):
    seed(tmp_path, capsys)
    alice = Account.objects.get(wallet_address=demo_wallet(1).address.lower())
    funds = {
        b.asset.symbol: b.available
        for b in Balance.objects.filter(account=alice).select_related("asset")
    }
    assert funds == {symbol: Decimal(amount) for symbol, amount in DEMO_FUNDS[1].items()}
    assert ledger_check() == []


def test_seeding_twice_changes_nothing(tmp_path, capsys):
    def state():
        return (
            Market.objects.count(),
            Account.objects.count(),
            get_user_model().objects.count(),
            sorted(Balance.objects.values_list("account", "asset", "available")),
        )

    seed(tmp_path, capsys)
    before = state()
    out = seed(tmp_path, capsys)
    assert state() == before
    assert "0 new rows" in out


def test_the_staff_password_from_the_environment_wins(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "correct-horse-battery")
    out = seed(tmp_path, capsys)
    assert "admin / correct-horse-battery" in out
    assert get_user_model().objects.get(username="admin").check_password("correct-horse-battery")


def test_demo_data_is_refused_where_it_is_not_allowed(tmp_path, settings):
    settings.DEMO_DATA_ALLOWED = False
    with pytest.raises(CommandError, match="disabled"):
        call_command("seed_demo", password_file=tmp_path / "password")
    assert not Market.objects.exists()
