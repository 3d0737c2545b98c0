"""Fixtures shared by the whole suite.

The engine's tests run with ``-p no:django``, so nothing here may import Django at
module level: Django-backed fixtures import what they need when they run.
"""

import pytest


@pytest.fixture
def base(db):
    from tests.factories import AssetFactory

    return AssetFactory(symbol="ETH")


@pytest.fixture
def quote(db):
    from tests.factories import AssetFactory

    return AssetFactory(symbol="USDC", decimals=6)


@pytest.fixture
def market(base, quote):
    """ETH-USDC, open: tick 0.01, lot 0.001, maker 2 bps, taker 5 bps."""
    from tests.factories import MarketFactory

    return MarketFactory(base=base, quote=quote)


@pytest.fixture
def trader(db):
    from tests.factories import AccountFactory

    return AccountFactory()


@pytest.fixture
def other_trader(db):
    from tests.factories import AccountFactory

    return AccountFactory()


@pytest.fixture
def buyer(quote):
    """A trader with 10,000 USDC."""
    from tests.factories import AccountFactory
    from tests.portfolio import sim

    account = AccountFactory(kyc_tier=1)
    sim.deposit(account, quote, "10000")
    return account


@pytest.fixture
def seller(base):
    """A trader with 50 ETH."""
    from tests.factories import AccountFactory
    from tests.portfolio import sim

    account = AccountFactory(kyc_tier=1)
    sim.deposit(account, base, "50")
    return account


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops-1", is_staff=True, password="x")


@pytest.fixture
def other_staff(django_user_model):
    return django_user_model.objects.create_user("ops-2", is_staff=True, password="x")
