"""Demo data for a developer's machine: markets that trade, traders with wallets,
and a staff login. Idempotent: running it again changes nothing that exists."""

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth import get_user_model
from eth_account import Account as EthAccount
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from compliance.models import JurisdictionRule, KycTierLimit
from exchange.models import Account, Asset, Market, MarketStatus
from exchange.services.accounts import account_register
from exchange.services.markets import asset_create, market_create, market_open
from portfolio.models import FeeTier, VaultOperation, WithdrawalLimit
from portfolio.services.vault import deposit_credit

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

# What each demo trader starts with: the market maker deep, the others modest.
DEMO_FUNDS = {
    1: {"USDC": "2000000", "ETH": "500", "BTC": "20", "SOL": "20000"},
    2: {"USDC": "100000", "ETH": "20", "BTC": "1", "SOL": "500"},
    3: {"USDC": "100000", "ETH": "20", "BTC": "1", "SOL": "500"},
    4: {"USDC": "25000", "ETH": "5", "BTC": "0.25", "SOL": "100"},
}
# Withdrawals approved without staff review, per KYC tier (in each asset's units).
DEMO_WITHDRAWAL_LIMITS = {
    1: {"USDC": "1000", "ETH": "0.5", "BTC": "0.02", "SOL": "10"},
    2: {"USDC": "10000", "ETH": "5", "BTC": "0.2", "SOL": "100"},
    3: {"USDC": "100000", "ETH": "50", "BTC": "2", "SOL": "1000"},
}

# The largest single order per KYC tier, in USDC (tier 3, the market maker, has none).
DEMO_KYC_ORDER_LIMITS = {1: "50000", 2: "250000"}
# Where the demo venue is not licensed.
DEMO_JURISDICTION_RULES = [("US", "not licensed in the United States")]

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


def demo_deposit_event(index: int, symbol: str) -> str:
    """A made-up but stable chain event per demo deposit: seeding again credits nothing."""
    return "0x" + keccak(text=f"dex-demo-deposit:{index}:{symbol}").hex()


def demo_seed(*, staff_password: str) -> DemoSeedResult:
    """Each step is its own transaction (the deposits are durable services); every step
    is idempotent, so a seed interrupted half-way is finished by running it again."""
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
        for symbol, amount in DEMO_FUNDS[index].items():
            event = demo_deposit_event(index, symbol)
            if VaultOperation.objects.filter(tx_hash=event, log_index=0).exists():
                continue
            deposit_credit(
                account=trader,
                asset=assets[symbol],
                amount=Decimal(amount),
                tx_hash=event,
                log_index=0,
                block_number=1,
            )
            created += 1

    for tier, limits in DEMO_WITHDRAWAL_LIMITS.items():
        for symbol, maximum in limits.items():
            _, made = WithdrawalLimit.objects.get_or_create(
                kyc_tier=tier, asset=assets[symbol], defaults={"auto_approve_max": maximum}
            )
            created += int(made)
    _, made = FeeTier.objects.get_or_create(
        quote=assets["USDC"],
        min_volume_30d=Decimal("1000000"),
        defaults={
            "name": "VIP 1",
            "maker_fee_rate": Decimal("0.0001"),
            "taker_fee_rate": Decimal("0.0004"),
        },
    )
    created += int(made)

    for tier, maximum in DEMO_KYC_ORDER_LIMITS.items():
        _, made = KycTierLimit.objects.get_or_create(
            kyc_tier=tier, quote=assets["USDC"], defaults={"max_order_notional": maximum}
        )
        created += int(made)
    for country, reason in DEMO_JURISDICTION_RULES:
        _, made = JurisdictionRule.objects.get_or_create(
            country=country, market=None, defaults={"reason": reason}
        )
        created += int(made)

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
