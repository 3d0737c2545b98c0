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
