"""KYC-tier limits: the largest order (at placement), and the deposits and withdrawals a
tier may make of an asset in any 24 hours (in the vault's services and the API)."""

import threading
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, connections, transaction

from compliance.models import KycFundingLimit, KycTierLimit
from exchange.matcher.market import MarketMatcher
from exchange.models import Trade
from exchange.services.orders import OrderRejected
from portfolio.models import VaultOperation, VaultOperationKind, VaultOperationStatus
from portfolio.services.vault import (
    ComplianceRefusal,
    withdrawal_reject,
    withdrawal_request,
)
from tests.api_support import key_client
from tests.factories import AccountFactory, AssetFactory, place_order, random_hex
from tests.portfolio import sim

D = Decimal
DEST = "0x" + "cd" * 20


def limit(asset, tier=1, deposit=None, withdrawal=None) -> KycFundingLimit:
    return KycFundingLimit.objects.create(
        kyc_tier=tier,
        asset=asset,
        daily_deposit_max=D(deposit) if deposit is not None else None,
        daily_withdrawal_max=D(withdrawal) if withdrawal is not None else None,
    )


def withdraw(account, asset, amount, key=None):
    return withdrawal_request(
        account=account,
        asset=asset,
        amount=D(amount),
        destination_address=DEST,
        idempotency_key=key or random_hex(8),
    )


def backdate(kind, hours):
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE portfolio_vaultoperation SET created_at = now() - %s * interval '1 hour' "
            "WHERE kind = %s",
            [hours, kind],
        )


@pytest.fixture
def trader1(quote):
    return AccountFactory(kyc_tier=1)


# --- Orders ------------------------------------------------------------------------------


def test_an_order_above_the_tiers_notional_limit_is_refused(market, buyer):
    KycTierLimit.objects.create(kyc_tier=1, quote=market.quote, max_order_notional=D("1000"))
    place_order(buyer, market, "BUY", quantity="10", price="100")  # exactly 1,000
    with pytest.raises(OrderRejected, match="need a higher KYC tier") as refused:
        place_order(buyer, market, "BUY", quantity="10.001", price="100")
    assert refused.value.code == "KYC_LIMIT_EXCEEDED"


@pytest.mark.parametrize("order_type", ["MARKET", "STOP_MARKET"])
def test_a_market_sell_is_valued_at_the_last_price_for_the_tiers_limit(
    market, buyer, seller, order_type
):
    KycTierLimit.objects.create(kyc_tier=1, quote=market.quote, max_order_notional=D("1000"))
    stop = {"stop_price": D("90")} if order_type == "STOP_MARKET" else {}
    # No trade yet: nothing to value it at, so no limit.
    place_order(seller, market, "SELL", "11", None, type=order_type, time_in_force="IOC", **stop)
    place_order(buyer, market, "BUY", "1", "100")
    place_order(seller, market, "SELL", "1", "100")
    drain = MarketMatcher(market)
    for _ in range(3):
        drain.run_batch()
    assert Trade.objects.exists()  # the last price is 100 now
    place_order(seller, market, "SELL", "10", None, type=order_type, time_in_force="IOC", **stop)
    with pytest.raises(OrderRejected, match="need a higher KYC tier") as refused:
        place_order(
            seller, market, "SELL", "10.001", None, type=order_type, time_in_force="IOC", **stop
        )
    assert refused.value.code == "KYC_LIMIT_EXCEEDED"


# --- Deposits ----------------------------------------------------------------------------


def test_deposits_are_credited_up_to_the_daily_limit(quote, trader1):
    limit(quote, deposit="1000")
    sim.deposit(trader1, quote, "600")
    sim.deposit(trader1, quote, "400")
    with pytest.raises(ComplianceRefusal, match="at most 0 more") as refused:
        sim.deposit(trader1, quote, "0.000001")  # USDC's smallest step
    assert refused.value.code == "DAILY_DEPOSIT_LIMIT_EXCEEDED"
    assert sim.balance(trader1, quote) == (D("1000"), D(0))
    assert VaultOperation.objects.filter(kind=VaultOperationKind.DEPOSIT).count() == 2


def test_a_deposit_past_the_limit_credits_nothing_and_names_the_room_left(quote, trader1):
    limit(quote, deposit="1000")
    sim.deposit(trader1, quote, "700")
    with pytest.raises(
        ComplianceRefusal, match="1000 USDC in 24 hours; 700 already, so at most 300 more"
    ):
        sim.deposit(trader1, quote, "300.5")
    assert sim.balance(trader1, quote) == (D("700"), D(0))


def test_deposits_older_than_24_hours_no_longer_count(quote, trader1):
    limit(quote, deposit="1000")
    sim.deposit(trader1, quote, "1000")
    backdate(VaultOperationKind.DEPOSIT, hours=24.1)
    sim.deposit(trader1, quote, "1000")
    assert sim.balance(trader1, quote) == (D("2000"), D(0))


def test_the_limit_is_per_tier_and_asset(quote, base, trader1):
    limit(quote, tier=1, deposit="10")
    higher = AccountFactory(kyc_tier=2)
    sim.deposit(higher, quote, "5000")  # tier 2 has no limit
    sim.deposit(trader1, base, "5000")  # nor has ETH
    assert sim.balance(higher, quote)[0] == D("5000")
    assert sim.balance(trader1, base)[0] == D("5000")


def test_a_limit_on_withdrawals_only_leaves_deposits_free(quote, trader1):
    limit(quote, withdrawal="10")
    sim.deposit(trader1, quote, "1000000")
    assert sim.balance(trader1, quote)[0] == D("1000000")


# --- Withdrawals -------------------------------------------------------------------------


def test_withdrawals_are_accepted_up_to_the_daily_limit(quote, trader1):
    limit(quote, withdrawal="500")
    sim.deposit(trader1, quote, "2000")
    withdraw(trader1, quote, "300")
    withdraw(trader1, quote, "200")
    with pytest.raises(ComplianceRefusal, match="withdraw 500 USDC") as refused:
        withdraw(trader1, quote, "1")
    assert refused.value.code == "DAILY_WITHDRAWAL_LIMIT_EXCEEDED"
    assert sim.balance(trader1, quote) == (D("1500"), D("500"))
    assert VaultOperation.objects.filter(kind=VaultOperationKind.WITHDRAWAL).count() == 2


def test_a_refused_withdrawal_gives_its_room_back(quote, trader1, staff):
    limit(quote, withdrawal="500")
    sim.deposit(trader1, quote, "2000")
    first = withdraw(trader1, quote, "500")
    withdrawal_reject(withdrawal=first, rejected_by=staff, reason="destination on a blocklist")
    withdraw(trader1, quote, "500")
    assert sim.balance(trader1, quote) == (D("1500"), D("500"))


def test_withdrawals_older_than_24_hours_no_longer_count(quote, trader1):
    limit(quote, withdrawal="500")
    sim.deposit(trader1, quote, "2000")
    withdraw(trader1, quote, "500")
    backdate(VaultOperationKind.WITHDRAWAL, hours=25)
    withdraw(trader1, quote, "500")
    assert VaultOperation.objects.filter(status=VaultOperationStatus.REQUESTED).count() == 2


def test_a_retried_withdrawal_is_not_counted_twice(quote, trader1):
    limit(quote, withdrawal="500")
    sim.deposit(trader1, quote, "2000")
    first = withdraw(trader1, quote, "500", key="w-1")
    assert withdraw(trader1, quote, "500", key="w-1").pk == first.pk


def test_a_zero_limit_allows_no_withdrawal(quote):
    unverified = AccountFactory(kyc_tier=0)
    limit(quote, tier=0, withdrawal="0")
    sim.deposit(unverified, quote, "10")
    with pytest.raises(ComplianceRefusal, match="at most 0 more"):
        withdraw(unverified, quote, "1")


def test_the_api_refuses_a_withdrawal_past_the_limit_with_its_code_and_reason(quote, trader1):
    limit(quote, withdrawal="100")
    sim.deposit(trader1, quote, "1000")
    body = {"asset": "USDC", "amount": "150", "destination_address": DEST}
    response = key_client(trader1).post(
        "/api/v1/withdrawals/", body | {"client_request_id": "w-9"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "DAILY_WITHDRAWAL_LIMIT_EXCEEDED"
    assert "withdraw 100 USDC in 24 hours" in response.json()["message"]
    assert sim.balance(trader1, quote) == (D("1000"), D(0))


# --- The limit table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deposit", "withdrawal", "constraint"),
    [
        ("-1", None, "kycfundinglimit_deposit_non_negative"),
        (None, "-0.00000001", "kycfundinglimit_withdrawal_non_negative"),
        (None, None, "kycfundinglimit_sets_a_limit"),
    ],
)
def test_the_database_refuses_a_meaningless_limit(quote, deposit, withdrawal, constraint):
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        limit(quote, deposit=deposit, withdrawal=withdrawal)


def test_a_tier_has_one_limit_per_asset(quote):
    limit(quote, deposit="1")
    with pytest.raises(IntegrityError, match="kycfundinglimit_unique"), transaction.atomic():
        limit(quote, withdrawal="1")


@pytest.mark.django_db(transaction=True)
def test_concurrent_withdrawals_cannot_overrun_the_limit_together():
    usdc = AssetFactory(symbol="USDC", decimals=6)
    trader = AccountFactory(kyc_tier=1)
    limit(usdc, withdrawal="500")
    sim.deposit(trader, usdc, "2000")
    barrier = threading.Barrier(2)
    outcomes = []

    def request(key):
        try:
            barrier.wait()
            withdraw(trader, usdc, "300", key=key)
            outcomes.append("accepted")
        except ComplianceRefusal:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request, args=(f"w-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["accepted", "refused"]
    assert sim.balance(trader, usdc) == (D("1700"), D("300"))
