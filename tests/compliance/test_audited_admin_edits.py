"""Every edit staff make in the admin is a service call that leaves an audit record:
reference data (assets, fee tiers, withdrawal limits, markets being listed, an
account's label) as much as the compliance rules. The KYC tier and country of an
account change only through its KYC case."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from compliance.models import AuditEvent
from portfolio.models import FeeTier

pytestmark = pytest.mark.django_db


def test_a_fee_tier_created_changed_and_deleted_in_the_admin_is_audited(admin_client, quote):
    add = reverse("admin:portfolio_feetier_add")
    response = admin_client.post(
        add,
        {
            "name": "VIP 1",
            "quote": quote.pk,
            "min_volume_30d": "1000000",
            "maker_fee_rate": "0.0001",
            "taker_fee_rate": "0.0003",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    tier = FeeTier.objects.get(name="VIP 1")
    change = reverse("admin:portfolio_feetier_change", args=[tier.pk])
    response = admin_client.post(
        change,
        {
            "name": "VIP 1",
            "quote": quote.pk,
            "min_volume_30d": "1000000",
            "maker_fee_rate": "0",
            "taker_fee_rate": "0.0003",
        },
    )
    assert response.status_code == 302
    delete = reverse("admin:portfolio_feetier_delete", args=[tier.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 302

    events = list(AuditEvent.objects.filter(target_type="portfolio.feetier").order_by("id"))
    assert [e.action for e in events] == ["feetier.create", "feetier.update", "feetier.delete"]
    assert {e.actor_label for e in events} == {"admin"}
    assert events[0].before is None
    assert Decimal(events[1].before["maker_fee_rate"]) == Decimal("0.0001")
    assert Decimal(events[1].after["maker_fee_rate"]) == 0
    assert events[2].before["name"] == "VIP 1"
    assert events[2].after is None


def test_an_account_label_edit_is_audited_and_its_tier_and_country_are_not_editable(
    admin_client, trader
):
    tier, country = trader.kyc_tier, trader.country
    change = reverse("admin:exchange_account_change", args=[trader.pk])
    page = admin_client.get(change).content.decode()
    assert 'name="label"' in page
    assert 'name="kyc_tier"' not in page
    assert 'name="country"' not in page

    response = admin_client.post(
        change,
        {
            "label": "desk 7",
            "kyc_tier": str(tier + 2),  # ignored: not fields of this form
            "country": "KP",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    trader.refresh_from_db()
    assert (trader.label, trader.kyc_tier, trader.country) == ("desk 7", tier, country)
    event = AuditEvent.objects.get(target_type="exchange.account", target_id=str(trader.pk))
    assert event.action == "account.update"
    assert (event.before["label"], event.after["label"]) == ("", "desk 7")


@pytest.mark.parametrize(
    ("remote_addr", "recorded"),
    [("2001:db8::7", "2001:db8::7"), ("203.0.113.9", "203.0.113.9"), ("", None), ("x", None)],
)
def test_an_audit_record_keeps_the_exact_address_or_none(rf, staff, remote_addr, recorded):
    from compliance.services.audit import Actor

    request = rf.post("/admin/", REMOTE_ADDR=remote_addr)
    request.user = staff
    assert Actor.from_request(request).ip_address == recorded
