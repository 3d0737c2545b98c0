"""Staff roles: each group can do its work in the admin and nothing else."""

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.urls import reverse
from django.utils import timezone

from compliance.models import AuditEvent, JurisdictionRule, KycCase, KycStatus
from compliance.roles import (
    ADMINISTRATOR,
    AUDITOR,
    COMPLIANCE_OFFICER,
    OPERATIONS,
    ROLES,
    role_permissions,
    roles_sync,
)
from compliance.selectors import ACCOUNT_360_SECTIONS
from compliance.services.kyc import KycDocumentInput, kyc_case_submit
from portfolio.models import VaultOperationStatus
from portfolio.services.vault import withdrawal_request
from tests.factories import AccountFactory
from tests.portfolio import sim

VENUE_APPS = ("exchange", "portfolio", "compliance")


def test_after_migrate_each_role_has_exactly_its_permissions(db):
    for role in ROLES:
        group = Group.objects.get(name=role.name)
        assert set(group.permissions.all()) == set(role_permissions(role)), role.name


@pytest.fixture
def roles(db):
    # The migration made them; a test run that empties the tables (transactional
    # tests) drops them, so make sure — roles_sync is idempotent.
    roles_sync()


@pytest.fixture
def login(client, django_user_model, roles):
    def login_as(role: str):
        user = django_user_model.objects.create_user(
            role.lower().replace(" ", "-"), is_staff=True, password="x"
        )
        user.groups.add(Group.objects.get(name=role))
        client.force_login(user)
        return user

    return login_as


@pytest.fixture
def case(db):
    account = AccountFactory(kyc_tier=0, country="")
    return kyc_case_submit(
        account=account,
        requested_tier=1,
        country="FR",
        documents=[
            KycDocumentInput(
                "PASSPORT", "P123", "FR", timezone.now().date() + dt.timedelta(days=90)
            )
        ],
    )


@pytest.fixture
def withdrawal(quote):
    account = AccountFactory(kyc_tier=1)
    sim.deposit(account, quote, "100")
    return withdrawal_request(
        account=account,
        asset=quote,
        amount=Decimal("10"),
        destination_address="0x" + "12" * 20,
        idempotency_key="w-1",
    )


def review(client, case, step, **fields):
    return client.post(f"/admin/compliance/kyccase/{case.pk}/review/", {"step": step, **fields})


def approve_withdrawals(client, withdrawal):
    return client.post(
        "/admin/portfolio/vaultoperation/",
        {"action": "approve_withdrawals", "_selected_action": [withdrawal.pk], "reason": ""},
    )


def changelist(model) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/"


# --- Compliance officer ----------------------------------------------------------------


def test_a_compliance_officer_reviews_kyc_from_queue_to_approval(client, login, case):
    officer = login(COMPLIANCE_OFFICER)
    queue = client.get("/admin/compliance/kyccase/", {"status__exact": "SUBMITTED"})
    assert queue.status_code == 200
    assert case.account.wallet_address in queue.content.decode()
    page = client.get(f"/admin/compliance/kyccase/{case.pk}/change/")
    assert page.status_code == 200
    assert 'value="start_review"' in page.content.decode()
    assert review(client, case, "start_review").status_code == 302
    assert review(client, case, "approve", tier="1", notes="passport checked").status_code == 302
    case.refresh_from_db()
    case.account.refresh_from_db()
    assert (case.status, case.reviewer) == (KycStatus.APPROVED, officer)
    assert case.account.kyc_tier == 1
    assert AuditEvent.objects.filter(action="kyc.approve", actor=officer).count() == 1


def test_a_compliance_officer_keeps_the_rules_and_reads_the_trail(client, login, market):
    login(COMPLIANCE_OFFICER)
    added = client.post(
        "/admin/compliance/jurisdictionrule/add/",
        {"country": "KP", "market": "", "reason": "sanctions"},
    )
    assert added.status_code == 302
    assert JurisdictionRule.objects.filter(country="KP").exists()
    for path in (
        "/admin/compliance/auditevent/",
        "/admin/compliance/accounthistory/",
        "/admin/compliance/kyctierlimit/add/",
        "/admin/compliance/kycfundinglimit/add/",
        "/admin/exchange/account/",
        "/admin/exchange/order/",
        "/admin/exchange/trade/",
        "/admin/portfolio/balance/",
    ):
        assert client.get(path).status_code == 200, path


def test_a_compliance_officer_holds_the_back_office_permissions_of_the_role(login):
    officer = login(COMPLIANCE_OFFICER)
    for codename in (
        "review_kyc",
        "freeze_account",
        "cancel_orders",
        "triage_alert",
        "run_surveillance",
        "export_reports",
        "view_venue",
    ):
        assert officer.has_perm(f"compliance.{codename}"), codename
    assert not officer.has_perm("compliance.control_market")
    assert not officer.has_perm("compliance.close_account")


def test_a_compliance_officer_does_not_run_markets_or_withdrawals(client, login, withdrawal):
    login(COMPLIANCE_OFFICER)
    assert client.get("/admin/exchange/market/add/").status_code == 403
    approve_withdrawals(client, withdrawal)
    withdrawal.refresh_from_db()
    assert withdrawal.status == VaultOperationStatus.REQUESTED


# --- Operations ------------------------------------------------------------------------


def test_operations_sees_the_venue_and_approves_withdrawals(client, login, withdrawal, market):
    support = login(OPERATIONS)
    for path in (
        "/admin/exchange/account/",
        "/admin/exchange/order/",
        "/admin/exchange/trade/",
        "/admin/exchange/market/",
        "/admin/portfolio/vaultoperation/",
    ):
        assert client.get(path).status_code == 200, path
    assert approve_withdrawals(client, withdrawal).status_code == 302
    withdrawal.refresh_from_db()
    assert (withdrawal.status, withdrawal.reviewed_by) == (VaultOperationStatus.APPROVED, support)
    for codename in ("control_market", "cancel_orders", "view_venue"):
        assert support.has_perm(f"compliance.{codename}"), codename


def test_operations_takes_no_kyc_freeze_or_alert_decisions(client, login, case):
    support = login(OPERATIONS)
    assert client.get("/admin/compliance/kyccase/").status_code == 403
    assert review(client, case, "start_review").status_code == 403
    case.refresh_from_db()
    assert case.status == KycStatus.SUBMITTED
    assert client.get("/admin/compliance/auditevent/").status_code == 403
    assert client.get("/admin/compliance/jurisdictionrule/add/").status_code == 403
    for codename in ("review_kyc", "freeze_account", "close_account", "triage_alert"):
        assert not support.has_perm(f"compliance.{codename}"), codename


def test_operations_reads_on_the_360_page_only_what_its_own_lists_show(client, login, case):
    """The 360° page of an account shows each section only to staff who may read that
    model's list: Operations sees the account's orders and trades, not its KYC cases,
    balances, alerts, freezes or audit trail, nor the portfolio built from balances."""
    login(OPERATIONS)
    account = case.account
    response = client.get(reverse("admin:exchange_account_360", args=[account.pk]))
    assert response.status_code == 200
    assert response.context["picture"].shown == {"open_orders", "recent_trades"}
    html = response.content.decode()
    assert 'id="open-orders"' in html
    assert 'id="recent-trades"' in html
    for hidden in ("kyc-cases", "balances", "alerts", "freezes", "audit-events"):
        assert f'id="{hidden}"' not in html, hidden
    assert f"<td>#{case.pk}</td>" not in html
    assert (
        client.get(reverse("admin:exchange_account_portfolio", args=[account.pk])).status_code
        == 403
    )


def test_a_compliance_officer_reads_every_section_of_the_360_page(client, login, case):
    login(COMPLIANCE_OFFICER)
    response = client.get(reverse("admin:exchange_account_360", args=[case.account.pk]))
    assert response.context["picture"].shown == set(ACCOUNT_360_SECTIONS)
    assert f"<td>#{case.pk}</td>" in response.content.decode()
    portfolio = reverse("admin:exchange_account_portfolio", args=[case.account.pk])
    assert client.get(portfolio).status_code == 200


# --- Auditor ---------------------------------------------------------------------------


def _venue_admins():
    return [
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in VENUE_APPS
    ]


def test_an_auditor_sees_every_venue_list_and_can_add_nothing(client, login, case, market):
    login(AUDITOR)
    for model, _ in _venue_admins():
        assert client.get(changelist(model)).status_code == 200, model
        assert client.get(changelist(model) + "add/").status_code == 403, model


@pytest.mark.parametrize("method", ["post", "delete_get", "delete_post"])
def test_an_auditor_changes_and_deletes_nothing(client, login, case, market, method):
    login(AUDITOR)
    rule = JurisdictionRule.objects.create(country="KP", reason="sanctions")
    for obj in (rule, market, case, case.account):
        url = f"{changelist(type(obj))}{obj.pk}/"
        if method == "post":
            response = client.post(url + "change/", {"reason": "x", "kyc_tier": 3})
        elif method == "delete_get":
            response = client.get(url + "delete/")
        else:
            response = client.post(url + "delete/", {"post": "yes"})
        assert response.status_code == 403, (obj, method)
    assert JurisdictionRule.objects.get(pk=rule.pk).reason == "sanctions"
    case.account.refresh_from_db()
    assert case.account.kyc_tier == 0


def test_an_auditor_takes_no_action(client, login, case, withdrawal):
    login(AUDITOR)
    assert review(client, case, "start_review").status_code == 403
    client.post(
        "/admin/compliance/kyccase/",
        {"action": "start_review", "_selected_action": [case.pk]},
    )
    approve_withdrawals(client, withdrawal)
    case.refresh_from_db()
    withdrawal.refresh_from_db()
    assert case.status == KycStatus.SUBMITTED
    assert withdrawal.status == VaultOperationStatus.REQUESTED
    assert not AuditEvent.objects.exclude(action="kyc.submit").exists()


def test_an_auditor_holds_only_view_permissions_and_reports(login):
    auditor = login(AUDITOR)
    held = auditor.get_all_permissions()
    assert held == {
        f"{p.content_type.app_label}.{p.codename}"
        for p in Permission.objects.filter(
            content_type__app_label__in=VENUE_APPS, codename__startswith="view_"
        ).select_related("content_type")
    } | {"compliance.export_reports", "compliance.view_venue"}


# --- Administrator ---------------------------------------------------------------------


def test_an_administrator_holds_every_permission(client, login, case):
    administrator = login(ADMINISTRATOR)
    assert not administrator.is_superuser
    assert len(administrator.get_all_permissions()) == Permission.objects.count()
    assert review(client, case, "start_review").status_code == 302
    case.refresh_from_db()
    assert case.status == KycStatus.IN_REVIEW


def test_roles_sync_takes_away_permissions_a_role_should_not_hold(roles):
    operations = Group.objects.get(name=OPERATIONS)
    operations.permissions.add(Permission.objects.get(codename="review_kyc"))
    roles_sync()
    assert not operations.permissions.filter(codename="review_kyc").exists()
    assert KycCase.objects.count() == 0


# --- Malformed staff input is an error message, never a 500 ---------------------------


@pytest.mark.parametrize("tier", ["\u00b2", "40000"])  # a superscript two; past smallint
def test_a_malformed_tier_to_approve_is_refused_with_a_message(client, login, case, tier):
    login(COMPLIANCE_OFFICER)
    assert review(client, case, "start_review").status_code == 302
    response = review(client, case, "approve", tier=tier, notes="x")
    assert response.status_code == 302
    page = client.get(response.url).content.decode()
    assert "the approved tier must be" in page or "whole number" in page
    case.refresh_from_db()
    assert case.status == KycStatus.IN_REVIEW


def test_a_statement_for_a_malformed_account_shows_the_form_error(client, login):
    login(AUDITOR)
    response = client.post(
        "/admin/compliance/reports/statement.csv",
        {
            "statement-start": "2026-01-01",
            "statement-end": "2026-02-01",
            "statement-account": "\u00b2",
        },
    )
    assert response.status_code == 400
    assert "Give a wallet address" in response.content.decode()


def test_a_rejection_reason_too_long_to_keep_is_refused_with_a_message(client, login, withdrawal):
    login(OPERATIONS)
    response = client.post(
        "/admin/portfolio/vaultoperation/",
        {"action": "reject_withdrawals", "_selected_action": [withdrawal.pk], "reason": "x" * 300},
        follow=True,
    )
    assert response.status_code == 200
    assert [m.message for m in response.context["messages"]] == [
        "a reason is at most 255 characters, not 300"
    ]
    withdrawal.refresh_from_db()
    assert withdrawal.status == VaultOperationStatus.REQUESTED


def test_a_freeze_with_a_long_reason_rejects_the_pending_withdrawals_too(client, login, withdrawal):
    login(COMPLIANCE_OFFICER)
    account = withdrawal.account
    reason = "suspected fraud " + "y" * 300
    url = f"/admin/exchange/account/control/freeze/?ids={account.pk}"
    assert client.post(url, {"reason": reason}).status_code == 302
    account.refresh_from_db()
    withdrawal.refresh_from_db()
    assert account.status == "FROZEN"
    assert withdrawal.status == VaultOperationStatus.REJECTED
    assert len(withdrawal.reason) == 255
    assert withdrawal.reason.startswith("account frozen: suspected fraud yyy")
    # The whole reason is the freeze's, in the audit trail.
    assert AuditEvent.objects.get(action="account.freeze").reason == reason


def test_approving_and_rejecting_a_withdrawal_are_audited(client, login, withdrawal):
    operations = login(OPERATIONS)
    assert approve_withdrawals(client, withdrawal).status_code == 302
    response = client.post(
        "/admin/portfolio/vaultoperation/",
        {
            "action": "reject_withdrawals",
            "_selected_action": [withdrawal.pk],
            "reason": "destination on a sanctions list",
        },
    )
    assert response.status_code == 302
    approve, reject = AuditEvent.objects.order_by("pk")
    assert (approve.action, approve.actor, approve.target_id) == (
        "withdrawal.approve",
        operations,
        str(withdrawal.pk),
    )
    assert (approve.before["status"], approve.after["status"]) == ("REQUESTED", "APPROVED")
    assert approve.ip_address is not None
    assert (reject.action, reject.actor, reject.reason) == (
        "withdrawal.reject",
        operations,
        "destination on a sanctions list",
    )
    assert (reject.before["status"], reject.after["status"]) == ("APPROVED", "REJECTED")
