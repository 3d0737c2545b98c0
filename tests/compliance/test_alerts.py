"""Alert triage: the services (assign, note, escalate, close) with their audit records and
refusals, the alert's rules in the database, two officers racing on one alert, the
admin queue and alert page, and the on-demand run."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from compliance.models import (
    AlertKind,
    AlertNote,
    AlertStatus,
    AuditEvent,
    BeneficialOwner,
    BeneficialOwnership,
    SurveillanceAlert,
)
from compliance.services import alerts
from compliance.services.alerts import AlertRefused
from compliance.services.audit import SYSTEM, Actor
from compliance.surveillance.findings import Window
from dex import celery_app
from tests.factories import AccountFactory
from tests.trades import trade_at

pytestmark = pytest.mark.django_db

T0 = datetime(2024, 4, 2, 14, 0, tzinfo=UTC)
WINDOW = Window(T0, T0 + timedelta(minutes=5))


def grant(user, *codenames: str):
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="compliance", codename__in=codenames)
    )
    return type(user).objects.get(pk=user.pk)  # a fresh copy: permissions are cached


@pytest.fixture
def officer(staff):
    return grant(staff, "triage_alert", "view_surveillancealert", "run_surveillance")


@pytest.fixture
def colleague(other_staff):
    return grant(other_staff, "triage_alert", "view_surveillancealert")


@pytest.fixture
def pair(market):
    """Two accounts of one beneficial owner that traded with each other twice in WINDOW."""
    seller, buyer = AccountFactory(label="seller"), AccountFactory(label="buyer")
    owner = BeneficialOwner.objects.create(name="Pair Holdings", reference="BO-PAIR")
    for account in (seller, buyer):
        BeneficialOwnership.objects.create(owner=owner, account=account)
    trades = [
        trade_at(market, "100", "2", T0 + timedelta(seconds=30), buyer=buyer, seller=seller),
        trade_at(market, "100.5", "2", T0 + timedelta(seconds=90), buyer=buyer, seller=seller),
    ]
    return seller, buyer, trades


@pytest.fixture
def alert(pair, market) -> SurveillanceAlert:
    (raised,) = alerts.surveillance_scan(market=market, window=WINDOW)
    return raised


def audit_of(alert: SurveillanceAlert):
    return list(
        AuditEvent.objects.filter(
            target_type="compliance.surveillancealert", target_id=str(alert.pk)
        ).order_by("id")
    )


def refused(code: str, call, *args, **kwargs) -> AlertRefused:
    with pytest.raises(AlertRefused) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code
    return caught.value


# --------------------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------------------


def test_assigning_records_who_gave_the_alert_to_whom(alert, officer, colleague):
    actor = Actor(user=officer, ip_address="10.0.0.7")

    alerts.alert_assign(actor=actor, alert=alert, assignee=colleague)

    alert.refresh_from_db()
    assert alert.assignee == colleague
    (event,) = audit_of(alert)
    assert event.action == "alert.assign"
    assert event.actor == officer
    assert event.ip_address == "10.0.0.7"
    assert event.before == {"status": "OPEN", "assignee": None, "closed_at": None}
    assert event.after == {"status": "OPEN", "assignee": colleague.pk, "closed_at": None}


def test_an_alert_goes_only_to_staff_who_may_triage(alert, officer, django_user_model):
    outsider = django_user_model.objects.create_user("support-1", is_staff=True)
    error = refused(
        "NOT_A_TRIAGER", alerts.alert_assign, actor=Actor(officer), alert=alert, assignee=outsider
    )
    assert "support-1" in str(error)
    alert.refresh_from_db()
    assert alert.assignee is None
    assert audit_of(alert) == []


def test_a_note_is_kept_with_its_author_and_audited(alert, officer):
    note = alerts.alert_note(actor=Actor(officer), alert=alert, body="  Same IP as last month.  ")

    assert note.body == "Same IP as last month."
    assert note.author == officer
    (event,) = audit_of(alert)
    assert event.action == "alert.note"
    assert event.after == {"note_id": note.pk, "body": "Same IP as last month."}


@pytest.mark.parametrize("body", ["", "   "])
def test_an_empty_note_is_refused(alert, officer, body):
    refused("NOTE_REQUIRED", alerts.alert_note, actor=Actor(officer), alert=alert, body=body)
    assert not AlertNote.objects.exists()
    assert audit_of(alert) == []


def test_the_platform_cannot_triage(alert):
    refused("NO_AUTHOR", alerts.alert_note, actor=SYSTEM, alert=alert, body="x")
    refused(
        "NO_AUTHOR",
        alerts.alert_close,
        actor=SYSTEM,
        alert=alert,
        resolution=AlertStatus.FALSE_POSITIVE,
        note="x",
    )


def test_escalating_moves_the_alert_on_with_a_note(alert, officer):
    alerts.alert_escalate(actor=Actor(officer), alert=alert, note="Pattern repeats daily.")

    alert.refresh_from_db()
    assert alert.status == AlertStatus.ESCALATED
    assert alert.closed_at is None
    assert [n.body for n in alert.notes.all()] == ["Pattern repeats daily."]
    (event,) = audit_of(alert)
    assert event.action == "alert.escalate"
    assert event.before["status"] == "OPEN"
    assert event.after["status"] == "ESCALATED"
    assert event.reason == "Pattern repeats daily."
    refused(
        "ALREADY_ESCALATED", alerts.alert_escalate, actor=Actor(officer), alert=alert, note="again"
    )


@pytest.mark.parametrize("resolution", [AlertStatus.FALSE_POSITIVE, AlertStatus.REPORTED])
@pytest.mark.parametrize("escalated", [False, True], ids=["open", "escalated"])
def test_closing_records_the_resolution(alert, officer, resolution, escalated):
    actor = Actor(officer)
    if escalated:
        alerts.alert_escalate(actor=actor, alert=alert, note="Needs a second look.")

    alerts.alert_close(actor=actor, alert=alert, resolution=resolution, note="Decided.")

    alert.refresh_from_db()
    assert alert.status == resolution
    assert alert.closed_at is not None
    event = audit_of(alert)[-1]
    assert event.action == "alert.close"
    assert event.before["status"] == ("ESCALATED" if escalated else "OPEN")
    assert event.before["closed_at"] is None
    assert event.after["status"] == resolution
    assert event.after["closed_at"] == alert.closed_at.isoformat()


def test_closing_a_closed_alert_is_a_clear_refusal_that_changes_nothing(alert, officer):
    actor = Actor(officer)
    alerts.alert_close(
        actor=actor, alert=alert, resolution=AlertStatus.FALSE_POSITIVE, note="Market maker."
    )
    alert.refresh_from_db()
    closed_at, events = alert.closed_at, len(audit_of(alert))

    error = refused(
        "ALERT_CLOSED",
        alerts.alert_close,
        actor=actor,
        alert=alert,
        resolution=AlertStatus.REPORTED,
        note="Changed my mind.",
    )

    assert "already closed (closed: false positive)" in str(error)
    alert.refresh_from_db()
    assert (alert.status, alert.closed_at) == (AlertStatus.FALSE_POSITIVE, closed_at)
    assert len(audit_of(alert)) == events
    assert alert.notes.count() == 1
    refused("ALERT_CLOSED", alerts.alert_escalate, actor=actor, alert=alert, note="x")
    refused("ALERT_CLOSED", alerts.alert_assign, actor=actor, alert=alert, assignee=officer)
    # A closed alert still takes notes: a report's reference, say.
    alerts.alert_note(actor=actor, alert=alert, body="STR filed, ref 2024-118.")


@pytest.mark.parametrize("resolution", ["OPEN", "ESCALATED", "CLOSED", ""])
def test_a_close_needs_a_closing_resolution_and_a_note(alert, officer, resolution):
    refused(
        "INVALID_RESOLUTION",
        alerts.alert_close,
        actor=Actor(officer),
        alert=alert,
        resolution=resolution,
        note="x",
    )
    refused(
        "NOTE_REQUIRED",
        alerts.alert_close,
        actor=Actor(officer),
        alert=alert,
        resolution=AlertStatus.REPORTED,
        note=" ",
    )
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN


# --------------------------------------------------------------------------------------
# The alert's rules in the database
# --------------------------------------------------------------------------------------


def _raw(sql: str, *params) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_the_database_refuses_reopening_a_closed_alert(alert, officer):
    alerts.alert_close(
        actor=Actor(officer), alert=alert, resolution=AlertStatus.REPORTED, note="Filed."
    )
    for status in ("OPEN", "ESCALATED", "FALSE_POSITIVE"):
        with pytest.raises(DatabaseError, match="Invalid transition"):
            _raw(
                "UPDATE compliance_surveillancealert SET status = %s, closed_at = NULL "
                "WHERE id = %s",
                status,
                alert.pk,
            )
    alert.refresh_from_db()
    assert alert.status == AlertStatus.REPORTED


def test_the_database_refuses_rewriting_evidence_or_deleting_an_alert(alert):
    with pytest.raises(DatabaseError):
        _raw(
            "UPDATE compliance_surveillancealert SET evidence = '{}'::jsonb WHERE id = %s",
            alert.pk,
        )
    with pytest.raises(DatabaseError):
        _raw("DELETE FROM compliance_surveillancealert WHERE id = %s", alert.pk)
    with pytest.raises(DatabaseError):
        _raw(
            "UPDATE compliance_surveillancealert SET status = 'REPORTED' WHERE id = %s",
            alert.pk,
        )  # closed without a closed_at
    alert.refresh_from_db()
    assert alert.evidence["trades"]
    assert alert.status == AlertStatus.OPEN


def test_notes_are_append_only(alert, officer):
    note = alerts.alert_note(actor=Actor(officer), alert=alert, body="first look")
    with pytest.raises(DatabaseError):
        _raw("UPDATE compliance_alertnote SET body = 'edited' WHERE id = %s", note.pk)
    with pytest.raises(DatabaseError):
        _raw("DELETE FROM compliance_alertnote WHERE id = %s", note.pk)


@pytest.mark.django_db(transaction=True)
def test_two_officers_closing_one_alert_at_once_close_it_once(market, officer, colleague):
    seller, buyer = AccountFactory(), AccountFactory()
    owner = BeneficialOwner.objects.create(name="Race", reference="BO-RACE")
    for account in (seller, buyer):
        BeneficialOwnership.objects.create(owner=owner, account=account)
    for k in range(2):
        trade_at(market, "100", "1", T0 + timedelta(seconds=k), buyer=buyer, seller=seller)
    (alert,) = alerts.surveillance_scan(market=market, window=WINDOW)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def close(user) -> None:
        try:
            start.wait()
            alerts.alert_close(
                actor=Actor(user),
                alert=alert,
                resolution=AlertStatus.FALSE_POSITIVE,
                note=f"closed by {user}",
            )
            outcomes.append("closed")
        except AlertRefused as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=close, args=(user,)) for user in (officer, colleague)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(outcomes) == ["ALERT_CLOSED", "closed"]
    assert [e.action for e in audit_of(alert)] == ["alert.close"]
    assert AlertNote.objects.filter(alert=alert).count() == 1


# --------------------------------------------------------------------------------------
# On-demand runs
# --------------------------------------------------------------------------------------


def test_an_on_demand_run_is_audited_per_market_and_raises_each_pattern_once(
    pair, market, officer, settings
):
    settings.SURVEILLANCE = {"WINDOW_SECONDS": 300}
    actor = Actor(officer, ip_address="10.1.2.3")

    first = alerts.surveillance_run(
        actor=actor, since=T0 - timedelta(minutes=10), until=T0 + timedelta(minutes=7)
    )
    again = alerts.surveillance_run(
        actor=actor, since=T0 - timedelta(minutes=10), until=T0 + timedelta(minutes=7)
    )

    assert [w.start for w in first.windows] == [
        T0 - timedelta(minutes=10),
        T0 - timedelta(minutes=5),
        T0,
    ]  # 14:05–14:10 has not ended by 14:07: it is left out
    assert first.raised_by_kind() == {AlertKind.WASH_TRADING: 1}
    assert again.raised == []
    runs = AuditEvent.objects.filter(action="surveillance.run").order_by("id")
    assert [(e.target_type, e.target_id, e.actor) for e in runs] == [
        ("exchange.market", str(market.pk), officer)
    ] * 2
    assert runs[0].after["raised"] == [first.raised[0].pk]
    assert runs[1].after["raised"] == []
    assert runs[0].after["windows"] == 3
    assert runs[0].ip_address == "10.1.2.3"


@pytest.mark.parametrize(
    ("since", "until", "code"),
    [
        (T0, T0 - timedelta(minutes=1), "EMPTY_PERIOD"),
        (T0 + timedelta(minutes=1), T0 + timedelta(minutes=4), "NO_COMPLETE_WINDOW"),
        (T0, T0.replace(tzinfo=None), "NAIVE_TIME"),
        (T0 - timedelta(days=30), T0, "PERIOD_TOO_LONG"),
    ],
)
def test_a_run_over_a_period_it_cannot_scan_is_refused(market, officer, since, until, code):
    refused(code, alerts.surveillance_run, actor=Actor(officer), since=since, until=until)
    assert not AuditEvent.objects.exists()


def test_a_run_of_a_period_still_running_is_refused(market, officer):
    now = timezone.now()
    refused(
        "NO_COMPLETE_WINDOW",
        alerts.surveillance_run,
        actor=Actor(officer),
        since=now + timedelta(minutes=1),
        until=now + timedelta(hours=1),
    )


# --------------------------------------------------------------------------------------
# The admin
# --------------------------------------------------------------------------------------


def changelist() -> str:
    return reverse("admin:compliance_surveillancealert_changelist")


def page(alert) -> str:
    return reverse("admin:compliance_surveillancealert_change", args=[alert.pk])


def triage(alert) -> str:
    return reverse("admin:compliance_surveillancealert_triage", args=[alert.pk])


def run_url() -> str:
    return reverse("admin:compliance_surveillancealert_run")


@pytest.fixture
def officer_client(client, officer):
    client.force_login(officer)
    return client


def test_the_queue_lists_filters_and_searches_alerts(officer_client, alert, pair):
    seller, _, _ = pair
    response = officer_client.get(changelist())
    assert response.status_code == 200
    assert "Run surveillance" in response.content.decode()
    assert list(response.context["cl"].result_list) == [alert]

    for query, expected in [
        ({"status__exact": "OPEN"}, [alert]),
        ({"status__exact": "REPORTED"}, []),
        ({"kind__exact": "WASH_TRADING"}, [alert]),
        ({"kind__exact": "SPOOFING"}, []),
        ({"assigned": "nobody"}, [alert]),
        ({"assigned": "me"}, []),
        ({"q": seller.wallet_address}, [alert]),
        ({"q": "0xnothing"}, []),
    ]:
        response = officer_client.get(changelist(), query)
        assert list(response.context["cl"].result_list) == expected, query


def test_the_alert_page_shows_the_evidence_with_links_and_the_notes(
    officer_client, officer, alert, pair
):
    seller, buyer, trades = pair
    alerts.alert_note(actor=Actor(officer), alert=alert, body="Seen this pair before.")
    response = officer_client.get(page(alert))

    assert response.status_code == 200
    html = response.content.decode()
    assert alert.summary in html
    for trade in trades:
        assert reverse("admin:exchange_trade_change", args=[trade.pk]) in html
        assert reverse("admin:exchange_order_change", args=[trade.maker_order_id]) in html
    for account in (seller, buyer):
        assert reverse("admin:exchange_account_change", args=[account.pk]) in html
        assert account.wallet_address in html
    assert "Pair Holdings" in html
    assert "wash_min_trades" in html
    assert "Close as false positive" in html
    assert "Seen this pair before." in html


def test_triage_through_the_alert_page(officer_client, officer, colleague, alert):
    response = officer_client.post(triage(alert), {"step": "assign_to_me"})
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.assignee == officer

    officer_client.post(triage(alert), {"step": "assign", "assignee": colleague.pk})
    officer_client.post(triage(alert), {"step": "note", "note": "Linked via KYC documents."})
    officer_client.post(triage(alert), {"step": "escalate", "note": "Over the limit."})
    response = officer_client.post(
        triage(alert), {"step": "close_reported", "note": "Reported to the FIU."}
    )

    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.assignee == colleague
    assert alert.status == AlertStatus.REPORTED
    assert [e.action for e in audit_of(alert)] == [
        "alert.assign",
        "alert.assign",
        "alert.note",
        "alert.escalate",
        "alert.close",
    ]
    assert {e.actor for e in audit_of(alert)} == {officer}
    html = officer_client.get(page(alert)).content.decode()
    assert "Reported to the FIU." in html
    assert "alert.escalate" in html  # the audit trail on the page


def test_a_refused_triage_step_shows_why_and_changes_nothing(officer_client, officer, alert):
    alerts.alert_close(
        actor=Actor(officer), alert=alert, resolution=AlertStatus.FALSE_POSITIVE, note="MM."
    )
    events = len(audit_of(alert))

    response = officer_client.post(triage(alert), {"step": "close_reported", "note": "again"})

    assert response.status_code == 409
    assert "already closed" in response.content.decode()
    alert.refresh_from_db()
    assert alert.status == AlertStatus.FALSE_POSITIVE
    assert len(audit_of(alert)) == events

    for bad in ({"step": "delete"}, {"step": "assign"}, {}):
        assert officer_client.post(triage(alert), bad).status_code == 400
    assert len(audit_of(alert)) == events


def test_staff_without_the_triage_permission_may_look_but_not_triage(client, staff, alert):
    viewer = grant(staff, "view_surveillancealert")
    client.force_login(viewer)
    assert client.get(page(alert)).status_code == 200
    assert "Close as false positive" not in client.get(page(alert)).content.decode()
    assert client.post(triage(alert), {"step": "assign_to_me"}).status_code == 403
    assert client.get(run_url()).status_code == 403
    alert.refresh_from_db()
    assert alert.assignee is None
    assert audit_of(alert) == []


def test_the_queue_assigns_selected_alerts_to_me_in_bulk(officer_client, officer, alert):
    response = officer_client.post(
        changelist(), {"action": "assign_to_me", "_selected_action": [alert.pk]}
    )
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.assignee == officer
    assert [e.action for e in audit_of(alert)] == ["alert.assign"]


def test_alerts_cannot_be_added_edited_or_deleted_in_the_admin(officer_client, alert):
    add = reverse("admin:compliance_surveillancealert_add")
    delete = reverse("admin:compliance_surveillancealert_delete", args=[alert.pk])
    assert officer_client.get(add).status_code == 403
    assert officer_client.post(delete, {"post": "yes"}).status_code == 403
    assert officer_client.post(page(alert), {"status": "REPORTED"}).status_code == 200
    alert.refresh_from_db()
    assert alert.status == AlertStatus.OPEN


@pytest.fixture
def eager():
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


def test_the_run_page_starts_an_audited_run(officer_client, officer, pair, market, eager):
    assert officer_client.get(run_url()).status_code == 200

    response = officer_client.post(
        run_url(),
        {
            "since": "2024-04-02 13:55:00",
            "until": "2024-04-02 14:05:00",
            "markets": [market.pk],
        },
    )

    assert response.status_code == 302
    alert = SurveillanceAlert.objects.get()
    assert alert.kind == AlertKind.WASH_TRADING
    (run,) = AuditEvent.objects.filter(action="surveillance.run")
    assert run.actor == officer
    assert run.after["since"] == "2024-04-02T13:55:00Z"
    assert run.after["until"] == "2024-04-02T14:05:00Z"
    assert run.after["raised"] == [alert.pk]


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"since": "2024-04-02 14:05", "until": "2024-04-02 14:00"}, "must end after it starts"),
        ({"since": "2024-04-02 14:01", "until": "2024-04-02 14:04"}, "no complete"),
        ({"since": "yesterday", "until": "2024-04-02 14:04"}, "Enter a valid date/time"),
        ({"until": "2024-04-02 14:04"}, "This field is required"),
    ],
)
def test_a_run_form_with_a_bad_period_says_why_and_runs_nothing(
    officer_client, market, eager, form, error
):
    response = officer_client.post(run_url(), form)

    assert response.status_code == 400
    assert error in response.content.decode()
    assert not AuditEvent.objects.exists()
