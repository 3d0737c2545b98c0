"""A freeze and an order being placed at the same moment: the placement reads the
account under a share lock in its own transaction, so the freeze waits for it (and
then cancels the order through the journal) or commits first (and the order is
refused). No order slips past a freeze."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, transaction

from compliance.gates import placement_refusal
from compliance.services.accounts import account_freeze
from compliance.services.audit import Actor
from exchange.models import AccountStatus, CommandKind, OrderCommand

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_freeze_waits_for_an_order_being_placed_then_follows_it(trader, market, staff):
    trader.kyc_tier = 1
    trader.save(update_fields=["kyc_tier"])
    in_placement, finish_placement = threading.Event(), threading.Event()
    seen: list = []

    def placing() -> None:
        try:
            with transaction.atomic():
                seen.append(placement_refusal(account=trader, market=market, notional=Decimal(1)))
                in_placement.set()
                finish_placement.wait(10)
        finally:
            connection.close()

    frozen_at: list[float] = []

    def freezing() -> None:
        try:
            account_freeze(actor=Actor(user=staff), account=trader, reason="sanctions hit")
            frozen_at.append(time.monotonic())
        finally:
            connection.close()

    placer = threading.Thread(target=placing)
    placer.start()
    assert in_placement.wait(10)
    freezer = threading.Thread(target=freezing)
    freezer.start()
    freezer.join(0.5)
    assert freezer.is_alive(), "the freeze went ahead while an order was being placed"
    placed_at = time.monotonic()
    finish_placement.set()
    placer.join(10)
    freezer.join(10)

    assert seen == [None]  # the order was accepted before the freeze…
    assert len(frozen_at) == 1
    assert frozen_at[0] >= placed_at  # …and the freeze came after it
    trader.refresh_from_db()
    assert trader.status == AccountStatus.FROZEN
    with transaction.atomic():
        refusal = placement_refusal(account=trader, market=market, notional=Decimal(1))
    assert getattr(refusal, "code", None) == "ACCOUNT_FROZEN"


def test_the_gate_reads_the_account_as_it_is_not_as_the_caller_loaded_it(trader, market, staff):
    trader.kyc_tier = 1
    trader.save(update_fields=["kyc_tier"])
    stale = type(trader).objects.get(pk=trader.pk)
    account_freeze(actor=Actor(user=staff), account=trader, reason="fraud report")
    assert stale.status == AccountStatus.ACTIVE  # the caller's copy is out of date
    with transaction.atomic():
        refusal = placement_refusal(account=stale, market=market, notional=Decimal(1))
    assert getattr(refusal, "code", None) == "ACCOUNT_FROZEN"
    assert not OrderCommand.objects.filter(kind=CommandKind.PLACE).exists()


def test_a_freeze_waits_for_a_withdrawal_being_requested_then_rejects_it(
    buyer, quote, staff, monkeypatch
):
    from portfolio.models import VaultOperation
    from portfolio.services import vault
    from tests.portfolio import sim

    in_request, finish_request = threading.Event(), threading.Event()
    original = vault.withdrawal_refusal

    def held_open(**kwargs):
        in_request.set()  # past the account check, the row share-locked
        finish_request.wait(10)
        return original(**kwargs)

    monkeypatch.setattr(vault, "withdrawal_refusal", held_open)

    def requesting() -> None:
        try:
            vault.withdrawal_request(
                account=buyer,
                asset=quote,
                amount=Decimal(25),
                destination_address="0x" + "cd" * 20,
                idempotency_key="w-race",
            )
        finally:
            connection.close()

    def freezing() -> None:
        try:
            account_freeze(actor=Actor(user=staff), account=buyer, reason="sanctions hit")
        finally:
            connection.close()

    requester = threading.Thread(target=requesting)
    requester.start()
    assert in_request.wait(10)
    freezer = threading.Thread(target=freezing)
    freezer.start()
    freezer.join(0.5)
    assert freezer.is_alive(), "the freeze went ahead while a withdrawal was being requested"
    finish_request.set()
    requester.join(10)
    freezer.join(10)

    withdrawal = VaultOperation.objects.get(idempotency_key__endswith=":w-race")
    assert (withdrawal.status, withdrawal.reason) == ("REJECTED", "account frozen: sanctions hit")
    assert sim.balance(buyer, quote) == (Decimal(10000), Decimal(0))


@pytest.mark.parametrize("second_asset", ["same", "other"])
def test_two_withdrawal_requests_with_one_key_at_once_make_one_request(
    buyer, quote, base, staff, monkeypatch, second_asset
):
    """The second waits for the first to commit, then is its retry (the same request) or
    a conflict (another asset under the key): never a second request, never a crash."""
    from portfolio.models import VaultOperation
    from portfolio.services import vault
    from tests.portfolio import sim

    sim.deposit(buyer, base, "5")
    in_request, finish_request = threading.Event(), threading.Event()
    original = vault.withdrawal_refusal

    def held_open(**kwargs):
        if not in_request.is_set():
            in_request.set()
            finish_request.wait(10)
        return original(**kwargs)

    monkeypatch.setattr(vault, "withdrawal_refusal", held_open)
    answers: dict[str, object] = {}

    def requesting(name: str, asset) -> None:
        try:
            answers[name] = vault.withdrawal_requested(
                account=buyer,
                asset=asset,
                amount=Decimal(2),
                destination_address="0x" + "cd" * 20,
                idempotency_key="w-1",
            )
        except vault.VaultError as exc:
            answers[name] = exc
        finally:
            connection.close()

    first = threading.Thread(target=requesting, args=("first", quote))
    first.start()
    assert in_request.wait(10)
    second = threading.Thread(
        target=requesting, args=("second", quote if second_asset == "same" else base)
    )
    second.start()
    second.join(0.5)
    assert second.is_alive(), "the second request did not wait for the first"
    finish_request.set()
    first.join(10)
    second.join(10)

    operation = VaultOperation.objects.get(kind="WITHDRAWAL")
    assert answers["first"] == vault.Requested(operation, created=True)
    if second_asset == "same":
        assert answers["second"] == vault.Requested(operation, created=False)
    else:
        assert isinstance(answers["second"], vault.IdempotencyConflict)
    assert sim.balance(buyer, quote) == (Decimal(9998), Decimal(2))
    assert sim.balance(buyer, base) == (Decimal(5), Decimal(0))
