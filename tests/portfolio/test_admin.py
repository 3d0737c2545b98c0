"""Staff run withdrawals and adjustments from the admin; every action goes through
the services, and ledger rows stay read-only."""

from decimal import Decimal

import pytest
from django.urls import reverse

from compliance.models import AuditEvent
from portfolio.models import (
    AdjustmentStatus,
    Balance,
    LedgerAccount,
    LedgerAdjustment,
    LedgerTransaction,
    Posting,
    VaultOperation,
    VaultOperationStatus,
)
from portfolio.services.vault import withdrawal_request

pytestmark = pytest.mark.django_db


def changelist(model) -> str:
    return reverse(f"admin:portfolio_{model._meta.model_name}_changelist")


@pytest.fixture
def withdrawal(quote, buyer):
    return withdrawal_request(
        account=buyer,
        asset=quote,
        amount=Decimal(300),
        destination_address="0x" + "ab" * 20,
        idempotency_key="admin-test",
    )


@pytest.mark.parametrize(
    "model",
    [Balance, LedgerAccount, LedgerTransaction, Posting, VaultOperation],
    ids=lambda m: m.__name__,
)
def test_ledger_pages_list_and_are_read_only(admin_client, withdrawal, model):
    assert admin_client.get(changelist(model)).status_code == 200
    add = reverse(f"admin:portfolio_{model._meta.model_name}_add")
    assert admin_client.get(add).status_code == 403


def test_staff_approve_a_withdrawal_from_the_admin(admin_client, admin_user, withdrawal):
    response = admin_client.post(
        changelist(VaultOperation),
        {"action": "approve_withdrawals", "_selected_action": [withdrawal.pk]},
        follow=True,
    )
    assert response.status_code == 200
    withdrawal.refresh_from_db()
    assert withdrawal.status == VaultOperationStatus.APPROVED
    assert withdrawal.reviewed_by == admin_user


def test_rejecting_from_the_admin_needs_a_reason_and_releases_the_funds(
    admin_client, withdrawal, buyer, quote
):
    data = {"action": "reject_withdrawals", "_selected_action": [withdrawal.pk]}
    response = admin_client.post(changelist(VaultOperation), data, follow=True)
    assert b"Give a reason to reject" in response.content
    withdrawal.refresh_from_db()
    assert withdrawal.status == VaultOperationStatus.REQUESTED

    admin_client.post(changelist(VaultOperation), {**data, "reason": "unverified address"})
    withdrawal.refresh_from_db()
    assert withdrawal.status == VaultOperationStatus.REJECTED
    assert Balance.objects.get(account=buyer, asset=quote).held == 0


def test_an_adjustment_entered_in_the_admin_waits_for_a_second_person(
    client, admin_user, django_user_model, buyer, quote
):
    client.force_login(admin_user)
    client.post(
        reverse("admin:portfolio_ledgeradjustment_add"),
        {"account": buyer.pk, "asset": quote.pk, "amount": "12.5", "reason": "fee refund"},
    )
    adjustment = LedgerAdjustment.objects.get()
    assert adjustment.status == AdjustmentStatus.PENDING
    assert adjustment.requested_by == admin_user

    approve = {"action": "approve_and_post", "_selected_action": [adjustment.pk]}
    response = client.post(changelist(LedgerAdjustment), approve, follow=True)
    assert b"someone other than its requester" in response.content
    assert LedgerAdjustment.objects.get().status == AdjustmentStatus.PENDING

    second = django_user_model.objects.create_superuser("second-officer", password="x")
    client.force_login(second)
    client.post(changelist(LedgerAdjustment), approve)
    assert LedgerAdjustment.objects.get().status == AdjustmentStatus.POSTED
    assert Balance.objects.get(account=buyer, asset=quote).available == Decimal("10012.5")
    # Both staff users' decisions are in the audit trail, the refused attempt is not.
    trail = [
        (e.action, e.actor, e.before and e.before["status"], e.after["status"], e.reason)
        for e in AuditEvent.objects.order_by("pk")
    ]
    assert trail == [
        ("adjustment.request", admin_user, None, "PENDING", "fee refund"),
        ("adjustment.post", second, "PENDING", "POSTED", "fee refund"),
    ]
