"""Fixtures shared by the whole suite.

The engine's tests run with ``-p no:django``, so nothing here may import Django at
module level: Django-backed fixtures import what they need when they run.
"""

import pytest


@pytest.fixture
def market(db):
    from tests.factories import MarketFactory

    return MarketFactory()


@pytest.fixture
def trader(db):
    from tests.factories import AccountFactory

    return AccountFactory()


@pytest.fixture
def other_trader(db):
    from tests.factories import AccountFactory

    return AccountFactory()
