"""Change history: triggers record every insert, update and delete of the sensitive
rows (whoever makes it, raw SQL included) in append-only tables, with the staff user
and page of a change made through the admin; the admin shows an object's history."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import DatabaseError, connection, transaction

from compliance.models import (
    CHANGE_HISTORY,
    AccountHistory,
    JurisdictionRule,
    JurisdictionRuleHistory,
    KycCase,
    KycFundingLimit,
    KycTierLimit,
    MarketHistory,
)
from exchange.models import Account, Market, MarketStatus
from portfolio.models import FeeTier
from tests.factories import AccountFactory


def history_of(obj):
    return list(CHANGE_HISTORY[type(obj)].objects.filter(pgh_obj_id=obj.pk).order_by("pgh_id"))


def staff_with(django_user_model, username, *codenames):
    user = django_user_model.objects.create_user(username, is_staff=True, password="x")
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def account(db):
    return AccountFactory(kyc_tier=0, country="")


def test_an_insert_and_each_update_of_an_account_are_recorded(account):
    account.kyc_tier = 2
    account.country = "FR"
    account.save(update_fields=["kyc_tier", "country"])
    insert, update = history_of(account)
    assert (insert.pgh_label, insert.kyc_tier, insert.country) == ("insert", 0, "")
    assert (update.pgh_label, update.kyc_tier, update.country) == ("update", 2, "FR")
    assert update.wallet_address == account.wallet_address


def test_an_update_by_raw_sql_is_recorded_too(account):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE exchange_account SET kyc_tier = 3 WHERE id = %s", [account.pk])
    latest = history_of(account)[-1]
    assert (latest.pgh_label, latest.kyc_tier) == ("update", 3)
    assert latest.pgh_context is None  # no web request behind it


def test_a_save_that_changes_nothing_records_nothing(account):
    account.save()  # updated_at moves, nothing else does
    assert [e.pgh_label for e in history_of(account)] == ["insert"]


def test_status_changes_still_obey_the_state_machine_and_are_recorded(account):
    account.status = "FROZEN"
    account.save(update_fields=["status"])
    with pytest.raises(DatabaseError, match="Invalid transition"), transaction.atomic():
        Account.objects.filter(pk=account.pk).update(status="BOGUS")
    assert [e.status for e in history_of(account)] == ["ACTIVE", "FROZEN"]


def test_market_changes_are_recorded(market):
    Market.objects.filter(pk=market.pk).update(status=MarketStatus.HALTED)
    Market.objects.filter(pk=market.pk).update(taker_fee_rate=Decimal("0.001"))
    events = MarketHistory.objects.filter(pgh_obj_id=market.pk).order_by("pgh_id")
    assert [(e.pgh_label, e.status, e.taker_fee_rate) for e in events] == [
        ("insert", "OPEN", Decimal("0.0005")),
        ("update", "HALTED", Decimal("0.0005")),
        ("update", "HALTED", Decimal("0.001")),
    ]


@pytest.mark.parametrize(
    ("make", "change"),
    [
        (
            lambda m, a: FeeTier.objects.create(
                name="VIP", quote=m.quote, min_volume_30d=1, maker_fee_rate=0, taker_fee_rate=0
            ),
            "name = 'Gold'",
        ),
        (
            lambda m, a: KycCase.objects.create(account=a, requested_tier=1, country="FR"),
            "requested_tier = 2",
        ),
        (
            lambda m, a: JurisdictionRule.objects.create(country="KP", reason="sanctions"),
            "reason = 'embargo'",
        ),
        (
            lambda m, a: KycTierLimit.objects.create(
                kyc_tier=1, quote=m.quote, max_order_notional=5
            ),
            "kyc_tier = 2",
        ),
        (
            lambda m, a: KycFundingLimit.objects.create(
                kyc_tier=1, asset=m.quote, daily_deposit_max=5
            ),
            "kyc_tier = 2",
        ),
    ],
    ids=["fee tier", "KYC case", "jurisdiction rule", "tier limit", "funding limit"],
)
def test_every_tracked_model_records_insert_update_and_delete(market, account, make, change):
    obj = make(market, account)
    history = CHANGE_HISTORY[type(obj)]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {obj._meta.db_table} SET {change} WHERE id = %s", [obj.pk])
    assert [e.pgh_label for e in history_of(obj)] == ["insert", "update"]
    if not isinstance(obj, KycCase):  # cases are never deleted: documents refer to them
        pk = obj.pk
        obj.delete()
        events = history.objects.filter(pgh_obj_id=pk).order_by("pgh_id")
        assert [e.pgh_label for e in events] == ["insert", "update", "delete"]


@pytest.mark.parametrize("statement", ["UPDATE {} SET kyc_tier = 9", "DELETE FROM {}"])
def test_history_rows_cannot_be_changed_or_deleted(account, statement):
    table = AccountHistory._meta.db_table
    with (
        pytest.raises(DatabaseError, match="Cannot"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement.format(table))
    assert len(history_of(account)) == 1


def test_a_change_made_in_the_admin_records_the_staff_user_and_page(client, django_user_model, db):
    officer = staff_with(
        django_user_model, "officer", "add_jurisdictionrule", "change_jurisdictionrule"
    )
    client.force_login(officer)
    response = client.post(
        "/admin/compliance/jurisdictionrule/add/",
        {"country": "KP", "market": "", "reason": "sanctions"},
    )
    assert response.status_code == 302, response.content
    rule = JurisdictionRule.objects.get(country="KP")
    (event,) = JurisdictionRuleHistory.objects.filter(pgh_obj_id=rule.pk)
    assert event.pgh_context["user"] == officer.pk
    assert event.pgh_context["url"] == "/admin/compliance/jurisdictionrule/add/"
    client.force_login(staff_with(django_user_model, "reader", "view_jurisdictionrulehistory"))
    listing = client.get("/admin/compliance/jurisdictionrulehistory/")
    assert '<td class="field-changed_by">officer</td>' in listing.content.decode()


def test_the_history_page_shows_the_recorded_changes(client, django_user_model, account):
    Account.objects.filter(pk=account.pk).update(kyc_tier=2, country="FR")
    auditor = staff_with(django_user_model, "auditor", "view_account", "view_accounthistory")
    client.force_login(auditor)
    page = client.get(f"/admin/exchange/account/{account.pk}/history/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="change-history"' in html
    assert "KYC tier" in html or "kyc tier" in html
    assert "0 → 2" in html
    assert "→ FR" in html


def test_the_history_page_hides_changes_from_staff_without_the_permission(
    client, django_user_model, account
):
    support = staff_with(django_user_model, "support", "view_account")
    client.force_login(support)
    page = client.get(f"/admin/exchange/account/{account.pk}/history/")
    assert page.status_code == 200
    assert "You may not see this object" in page.content.decode()


def test_history_tables_are_read_only_in_the_admin(admin_client, account):
    event = history_of(account)[0]
    listing = admin_client.get("/admin/compliance/accounthistory/")
    assert listing.status_code == 200
    assert f"/admin/exchange/account/{account.pk}/history/" in listing.content.decode()
    assert admin_client.get("/admin/compliance/accounthistory/add/").status_code == 403
    detail = f"/admin/compliance/accounthistory/{event.pk}/change/"
    assert admin_client.get(detail).status_code == 200
    assert admin_client.post(detail, {"kyc_tier": 5}).status_code == 403
    delete = f"/admin/compliance/accounthistory/{event.pk}/delete/"
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert len(history_of(account)) == 1
