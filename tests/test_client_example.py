"""The README's client example, run as a separate program against a live server: it
signs in with its wallet, creates an API key and places a signed order."""

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from eth_account import Account as EthAccount

from exchange.models import Order
from tests.factories import AccountFactory, AssetFactory, MarketFactory
from tests.portfolio import sim

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "client_example.py"


def test_the_readme_client_signs_in_and_places_a_signed_order(live_server, transactional_db):
    usdc, eth = AssetFactory(symbol="USDC"), AssetFactory(symbol="ETH")
    MarketFactory(base=eth, quote=usdc, symbol="ETH-USDC", lot_size="0.0001", min_quantity="0.0001")
    key = EthAccount.create()
    account = AccountFactory(wallet_address=key.address.lower(), kyc_tier=1)
    sim.deposit(account, usdc, "1000")

    run = subprocess.run(
        [sys.executable, str(EXAMPLE), live_server.url, key.key.hex()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("201 "), run.stdout
    order = Order.objects.get(account=account)
    assert (order.side, order.price, order.quantity) == ("BUY", Decimal(1500), Decimal("0.01"))
    assert order.client_order_id.startswith("example-")
