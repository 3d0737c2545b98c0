"""Demo data for a developer's machine: markets that trade, traders with wallets,
and a staff login. Idempotent: running it again changes nothing that exists."""

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction
from eth_account import Account as EthAccount
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from exchange.models import Account, Asset, Market, MarketStatus
from exchange.services.accounts import account_register
from exchange.services.markets import asset_create, market_create, market_open

DEMO_ASSETS = [
    # symbol, name, on-chain decimals
    ("USDC", "USD Coin", 6),
    ("ETH", "Ether", 18),
    ("BTC", "Wrapped Bitcoin", 8),
    ("SOL", "Wrapped SOL", 9),
]

# base, quote, tick, lot, min quantity, min notional, maker fee, taker fee
DEMO_MARKETS = [
    ("ETH", "USDC", "0.01", "0.0001", "0.0001", "5", "0.0002", "0.0005"),
    ("BTC", "USDC", "0.1", "0.00001", "0.00001", "5", "0.0002", "0.0005"),
    ("SOL", "USDC", "0.001", "0.01", "0.01", "5", "0.0002", "0.0005"),
]

DEMO_TRADERS = [
    # label, country, KYC tier
    ("Alice (market maker)", "GB", 3),
    ("Bob", "DE", 2),
    ("Carol", "SG", 2),
    ("Dave", "FR", 1),
]

DEMO_STAFF_USERNAME = "admin"


def demo_wallet(index: int) -> LocalAccount:
    """The wallet of demo trader ``index``: a key anyone can derive, so demo bots and the
    market simulator can sign for these traders. Never holds anything of value."""
    return EthAccount.from_key(keccak(text=f"dex-demo-trader-{index}"))


@dataclass(frozen=True)
class DemoSeedResult:
    markets: list[Market]
    traders: list[Account]
    staff_username: str
    created: int


@transaction.atomic(durable=True)
def demo_seed(*, staff_password: str) -> DemoSeedResult:
    created = 0
    assets: dict[str, Asset] = {}
    for symbol, name, decimals in DEMO_ASSETS:
        asset = Asset.objects.filter(symbol=symbol).first()
        if asset is None:
            asset = asset_create(symbol=symbol, name=name, decimals=decimals)
            created += 1
        assets[symbol] = asset

    markets = []
    for base, quote, tick, lot, min_qty, min_notional, maker, taker in DEMO_MARKETS:
        market = Market.objects.filter(base=assets[base], quote=assets[quote]).first()
        if market is None:
            market = market_create(
                base=assets[base],
                quote=assets[quote],
                tick_size=Decimal(tick),
                lot_size=Decimal(lot),
                min_quantity=Decimal(min_qty),
                min_notional=Decimal(min_notional),
                maker_fee_rate=Decimal(maker),
                taker_fee_rate=Decimal(taker),
            )
            created += 1
        if market.status == MarketStatus.PRE_OPEN:
            market = market_open(market=market)
        markets.append(market)

    traders = []
    for index, (label, country, tier) in enumerate(DEMO_TRADERS, start=1):
        address = demo_wallet(index).address.lower()
        trader = Account.objects.filter(wallet_address=address).first()
        if trader is None:
            trader = account_register(
                wallet_address=address, label=label, country=country, kyc_tier=tier
            )
            created += 1
        traders.append(trader)

    user_model = get_user_model()
    staff, staff_created = user_model.objects.get_or_create(
        username=DEMO_STAFF_USERNAME,
        defaults={"is_staff": True, "is_superuser": True, "email": "admin@dex.local"},
    )
    created += int(staff_created)
    # The printed login must always work, so the password follows the caller's.
    if staff_created or not staff.check_password(staff_password):
        staff.set_password(staff_password)
        staff.save(update_fields=["password"])

    return DemoSeedResult(
        markets=markets, traders=traders, staff_username=DEMO_STAFF_USERNAME, created=created
    )
