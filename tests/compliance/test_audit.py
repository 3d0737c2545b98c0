"""The audit trail: append-only in the database, read-only in the admin, and written
once, with the right before and after, by each staff change to the compliance rules."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import DatabaseError, connection, transaction

from compliance.admin.audit import before_after_rows
from compliance.models import AuditEvent, JurisdictionRule, KycFundingLimit
from compliance.services.audit import SYSTEM, Actor, audit_record
from compliance.services.limits import compliance_rule_delete, compliance_rule_save


@pytest.fixture
def event(db):
    rule = JurisdictionRule.objects.create(country="KP", reason="sanctions")
    with transaction.atomic():
        return audit_record(
            actor=SYSTEM,
            action="jurisdictionrule.update",
            target=rule,
            before={"reason": "old", "country": "KP"},
            after={"reason": "sanctions", "country": "KP"},
            reason="a test",
        )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE compliance_auditevent SET reason = 'rewritten'",
        "UPDATE compliance_auditevent SET after = NULL",
        "DELETE FROM compliance_auditevent",
    ],
)
def test_the_database_refuses_to_change_or_delete_an_audit_event(event, statement):
    with (
        pytest.raises(DatabaseError, match="Cannot"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    event.refresh_from_db()
    assert event.reason == "a test"
    assert event.after["reason"] == "sanctions"


def test_the_orm_cannot_change_or_delete_one_either(event):
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(reason="x")
    with pytest.raises(DatabaseError), transaction.atomic():
        event.delete()
    assert AuditEvent.objects.filter(pk=event.pk, reason="a test").exists()


def test_before_and_after_are_paired_by_field_and_changes_marked():
    rows = before_after_rows({"status": "OPEN", "tier": 1}, {"status": "DONE", "tier": 1, "n": 2})
    assert rows == [
        ("status", "OPEN", "DONE", True),
        ("tier", "1", "1", False),
        ("n", "", "2", True),
    ]
    assert before_after_rows(None, None) == []


# --- The rule services ---------------------------------------------------------------


def test_creating_changing_and_deleting_a_rule_each_write_one_event(staff, quote):
    actor = Actor(user=staff, ip_address="192.0.2.1")
    limit = compliance_rule_save(
        actor=actor,
        rule=KycFundingLimit(kyc_tier=1, asset=quote, daily_withdrawal_max=Decimal("100")),
    )
    limit.daily_withdrawal_max = Decimal("250")
    compliance_rule_save(actor=actor, rule=limit)
    pk = limit.pk
    compliance_rule_delete(actor=actor, rule=limit)
    create, update, delete = AuditEvent.objects.order_by("id")
    assert [e.action for e in (create, update, delete)] == [
        "kycfundinglimit.create",
        "kycfundinglimit.update",
        "kycfundinglimit.delete",
    ]
    assert {e.target_id for e in (create, update, delete)} == {str(pk)}
    assert create.before is None
    assert create.after == {
        "kyc_tier": 1,
        "asset": quote.pk,
        "daily_deposit_max": None,
        "daily_withdrawal_max": "100.00000000",
    }
    assert update.before["daily_withdrawal_max"] == "100.00000000"
    assert update.after["daily_withdrawal_max"] == "250.00000000"
    assert delete.before["daily_withdrawal_max"] == "250.00000000"
    assert delete.after is None
    assert (update.actor, update.ip_address) == (staff, "192.0.2.1")
    assert not KycFundingLimit.objects.exists()


def test_a_refused_rule_change_leaves_no_event(staff, quote):
    with pytest.raises(DatabaseError):
        compliance_rule_save(actor=Actor(user=staff), rule=KycFundingLimit(kyc_tier=1, asset=quote))
    assert not AuditEvent.objects.exists()


# --- The admin -----------------------------------------------------------------------


@pytest.fixture
def reader(client, django_user_model):
    user = django_user_model.objects.create_user("reader", is_staff=True, password="x")
    user.user_permissions.set(Permission.objects.filter(codename="view_auditevent"))
    client.force_login(user)
    return client


def test_the_trail_lists_with_filters_and_search(reader, event, staff):
    rule = JurisdictionRule.objects.create(country="CU", reason="embargo")
    with transaction.atomic():
        audit_record(actor=Actor(user=staff), action="jurisdictionrule.create", target=rule)
    listing = reader.get("/admin/compliance/auditevent/", {"q": "KP"})
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "jurisdictionrule.update" in html
    for title in ("action", "target type", "actor label"):
        assert f'data-filter-title="{title}"' in html
    filtered = reader.get("/admin/compliance/auditevent/", {"action": "jurisdictionrule.create"})
    assert "1 audit event" in filtered.content.decode()
    assert "CU: all markets" in filtered.content.decode()


def test_an_event_page_shows_before_and_after_side_by_side(reader, event):
    page = reader.get(f"/admin/compliance/auditevent/{event.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "audit-before-after" in html
    assert '<tr class="changed"><th scope="row">reason</th><td><pre>old</pre></td>' in html
    assert '<tr class="same"><th scope="row">country</th>' in html


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/admin/compliance/auditevent/add/"),
        ("post", "/admin/compliance/auditevent/{pk}/change/"),
        ("get", "/admin/compliance/auditevent/{pk}/delete/"),
        ("post", "/admin/compliance/auditevent/{pk}/delete/"),
    ],
)
def test_nobody_adds_changes_or_deletes_events_in_the_admin(admin_client, event, method, path):
    response = getattr(admin_client, method)(path.format(pk=event.pk), {"reason": "x"})
    assert response.status_code == 403
    event.refresh_from_db()
    assert event.reason == "a test"


def test_the_delete_action_is_not_offered(admin_client, event):
    response = admin_client.post(
        "/admin/compliance/auditevent/",
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )
    assert response.status_code in (200, 302)
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_a_rule_saved_in_the_admin_is_audited_once(admin_client, admin_user):
    response = admin_client.post(
        "/admin/compliance/jurisdictionrule/add/",
        {"country": "IR", "market": "", "reason": "sanctions"},
    )
    assert response.status_code == 302
    (event,) = AuditEvent.objects.all()
    assert (event.action, event.actor) == ("jurisdictionrule.create", admin_user)
    assert event.after == {"country": "IR", "market": None, "reason": "sanctions"}
