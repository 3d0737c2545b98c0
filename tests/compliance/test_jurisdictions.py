"""Jurisdiction rules: residents of a country barred from every market cannot sign in,
trade or withdraw; a rule for one market bars only that market."""

from decimal import Decimal

import pytest
from eth_account import Account as EthAccount
from rest_framework.test import APIClient

from compliance.gates import jurisdiction_block, sign_in_refusal
from compliance.models import JurisdictionRule
from exchange.models import Account
from exchange.services.orders import OrderRejected
from exchange.services.sessions import SignInError, login_challenge_issue, login_complete
from exchange.signing import sign_message
from portfolio.models import VaultOperation
from portfolio.services.vault import ComplianceRefusal, withdrawal_request
from tests.api_support import key_client
from tests.factories import AccountFactory, MarketFactory, place_order
from tests.portfolio import sim

DEST = "0x" + "ef" * 20


def bar(country, market=None, reason="sanctioned"):
    return JurisdictionRule.objects.create(country=country, market=market, reason=reason)


def sign_in(key):
    challenge = login_challenge_issue(address=key.address)
    return login_complete(
        message=challenge.message, signature=sign_message(key.key, challenge.message)
    )


@pytest.fixture
def wallet(db):
    return EthAccount.create()


def test_a_resident_of_a_barred_country_cannot_sign_in(wallet):
    AccountFactory(wallet_address=wallet.address.lower(), country="KP")
    bar("KP", reason="sanctions programme")
    with pytest.raises(SignInError, match="not available in KP: sanctions programme") as refused:
        sign_in(wallet)
    assert refused.value.code == "JURISDICTION_RESTRICTED"


def test_the_api_answers_a_barred_sign_in_with_its_code(wallet):
    AccountFactory(wallet_address=wallet.address.lower(), country="IR")
    bar("IR")
    client = APIClient()
    challenge = client.post("/api/v1/auth/challenge/", {"address": wallet.address}, format="json")
    message = challenge.json()["message"]
    response = client.post(
        "/api/v1/auth/login/",
        {"message": message, "signature": sign_message(wallet.key, message)},
        format="json",
    )
    assert response.status_code == 403
    assert response.json()["code"] == "JURISDICTION_RESTRICTED"
    assert "token" not in response.json()


def test_a_rule_for_one_market_does_not_bar_sign_in(wallet, market):
    AccountFactory(wallet_address=wallet.address.lower(), country="US")
    bar("US", market=market, reason="not licensed for this pair")
    assert sign_in(wallet).account.country == "US"


def test_residents_of_other_countries_and_new_wallets_sign_in(wallet):
    bar("KP")
    session = sign_in(wallet)  # a new wallet has no declared country yet
    assert session.account.country == ""
    assert Account.objects.count() == 1
    assert sign_in_refusal(account=AccountFactory(country="FR")) is None


def test_orders_are_refused_in_a_barred_market_and_allowed_elsewhere(market, quote):
    trader = AccountFactory(kyc_tier=1, country="US")
    sim.deposit(trader, quote, "1000")
    other = MarketFactory(base__symbol="BTC", quote=quote)
    bar("US", market=market, reason="not licensed for this pair")
    with pytest.raises(OrderRejected, match="not licensed for this pair") as refused:
        place_order(trader, market, "BUY", quantity="1", price="100")
    assert refused.value.code == "JURISDICTION_RESTRICTED"
    assert place_order(trader, other, "BUY", quantity="1", price="100").pk


def test_orders_are_refused_everywhere_for_a_country_barred_from_all(market, quote):
    trader = AccountFactory(kyc_tier=1, country="KP")
    sim.deposit(trader, quote, "1000")
    bar("KP")
    with pytest.raises(OrderRejected) as refused:
        place_order(trader, market, "BUY", quantity="1", price="100")
    assert refused.value.code == "JURISDICTION_RESTRICTED"


def test_withdrawals_are_refused_to_residents_of_a_barred_country(quote):
    trader = AccountFactory(kyc_tier=1, country="KP")
    sim.deposit(trader, quote, "1000")
    bar("KP", reason="sanctions programme")
    with pytest.raises(ComplianceRefusal, match="withdrawing is not available in KP") as refused:
        withdrawal_request(
            account=trader,
            asset=quote,
            amount=Decimal("10"),
            destination_address=DEST,
            idempotency_key="w-1",
        )
    assert refused.value.code == "JURISDICTION_RESTRICTED"
    assert sim.balance(trader, quote) == (Decimal("1000"), Decimal(0))
    assert not VaultOperation.objects.filter(kind="WITHDRAWAL").exists()


def test_a_market_rule_does_not_block_withdrawals(market, quote):
    trader = AccountFactory(kyc_tier=1, country="US")
    sim.deposit(trader, quote, "1000")
    bar("US", market=market)
    withdrawal_request(
        account=trader,
        asset=quote,
        amount=Decimal("10"),
        destination_address=DEST,
        idempotency_key="w-1",
    )
    assert sim.balance(trader, quote) == (Decimal("990"), Decimal("10"))


def test_jurisdiction_block_names_the_reason_of_the_all_markets_rule(market):
    bar("CU", market=market, reason="one market")
    assert jurisdiction_block("CU") is None
    bar("CU", reason="every market")
    assert jurisdiction_block("CU") == "every market"
    assert jurisdiction_block("") is None


def test_the_api_refuses_a_barred_residents_withdrawal_with_its_code(quote):
    trader = AccountFactory(kyc_tier=1, country="KP")
    sim.deposit(trader, quote, "1000")
    bar("KP", reason="sanctions programme")
    response = key_client(trader).post(
        "/api/v1/withdrawals/",
        {"asset": "USDC", "amount": "10", "destination_address": DEST, "client_request_id": "w"},
        format="json",
    )
    assert response.status_code == 403
    assert response.json()["code"] == "JURISDICTION_RESTRICTED"
    assert "sanctions programme" in response.json()["message"]
    assert sim.balance(trader, quote) == (Decimal("1000"), Decimal(0))
