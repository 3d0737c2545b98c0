import pytest
from django.contrib.auth import get_user_model

from exchange.models import Asset, Market
from tests.factories import AccountFactory, AssetFactory, MarketFactory
from tests.portfolio import sim


@pytest.fixture
def base(db) -> Asset:
    return AssetFactory(symbol="ETH")


@pytest.fixture
def quote(db) -> Asset:
    return AssetFactory(symbol="USDC", decimals=6)


@pytest.fixture
def market(base, quote) -> Market:
    """Tick 0.01, lot 0.001, maker 2 bps, taker 5 bps."""
    return MarketFactory(base=base, quote=quote)


@pytest.fixture
def buyer(quote):
    account = AccountFactory(kyc_tier=1)
    sim.deposit(account, quote, "10000")
    return account


@pytest.fixture
def seller(base):
    account = AccountFactory(kyc_tier=1)
    sim.deposit(account, base, "50")
    return account


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("ops-1", is_staff=True, password="x")


@pytest.fixture
def other_staff(db):
    return get_user_model().objects.create_user("ops-2", is_staff=True, password="x")
