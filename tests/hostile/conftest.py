"""Shared by the hostile-input tests: a funded trader holding an API key with every
scope, the ledger and order tables counted (a refusal must leave them as they were),
and hypothesis settings that give the same examples on every run."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

# The same examples on every run, so CI is repeatable; run with more examples and
# without ``derandomize`` to explore.
FUZZ = hypothesis_settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Trader:
    wallet: object  # tests.api_support.Wallet
    api: APIClient
    api_key: str

    @property
    def account(self):
        return self.wallet.account


@pytest.fixture
def funded(market, quote, base, settings) -> Trader:
    """A KYC'd trader with 100,000 USDC and 100 ETH and an API key with every scope.
    Placement does not wait for a matcher."""
    from tests.api_support import Wallet, key_client
    from tests.portfolio import sim

    settings.ORDER_REPLY_TIMEOUT = 0
    wallet = Wallet.create(kyc_tier=1)
    sim.deposit(wallet.account, quote, "100000")
    sim.deposit(wallet.account, base, "100")
    api = key_client(wallet.account)
    return Trader(wallet, api, api._credentials["HTTP_X_API_KEY"])


def ledger_state() -> tuple:
    """What a refused request must not change: orders, commands, postings, balances."""
    from exchange.models import Order, OrderCommand
    from portfolio.models import Balance, Posting

    return (
        Order.objects.count(),
        OrderCommand.objects.count(),
        Posting.objects.count(),
        sorted(Balance.objects.values_list("pk", "available", "held")),
    )


def assert_error_shape(response) -> dict:
    """A refusal in the API's one error shape."""
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:500])
    body = response.json()
    assert isinstance(body.get("code"), str), body
    assert body["code"], body
    assert isinstance(body.get("message"), str), body
    assert body["message"], body
    assert set(body) <= {"code", "message", "details"}, body
    return body
