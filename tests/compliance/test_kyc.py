"""The KYC workflow: submission with document metadata, review, approval (which gives
the account its tier and country), rejection, requests for more information and
resubmission; each step audited once, each refusal changing nothing."""

import datetime as dt
import threading

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, connections
from django.utils import timezone

from compliance.models import AuditEvent, KycCase, KycDocument, KycStatus
from compliance.services.audit import SYSTEM, Actor
from compliance.services.kyc import (
    KycDocumentInput,
    KycError,
    KycTransitionError,
    kyc_case_approve,
    kyc_case_reject,
    kyc_case_request_info,
    kyc_case_resubmit,
    kyc_case_start_review,
    kyc_case_submit,
    kyc_document_number_hash,
)
from tests.factories import AccountFactory


def passport(number="AB 123-456", expires_on=None, **fields) -> KycDocumentInput:
    return KycDocumentInput(
        document_type=fields.pop("document_type", "PASSPORT"),
        number=number,
        issuing_country=fields.pop("issuing_country", "FR"),
        expires_on=expires_on or timezone.now().date() + dt.timedelta(days=365),
    )


@pytest.fixture
def applicant(db):
    return AccountFactory(kyc_tier=0, country="")


@pytest.fixture
def reviewer(staff):
    return Actor(user=staff, ip_address="10.0.0.7")


def submit(account, **fields):
    return kyc_case_submit(
        account=account,
        requested_tier=fields.pop("requested_tier", 2),
        country=fields.pop("country", "FR"),
        documents=fields.pop("documents", [passport()]),
        **fields,
    )


def in_review(account, reviewer):
    return kyc_case_start_review(actor=reviewer, case=submit(account))


def events(case, action=None):
    rows = AuditEvent.objects.filter(target_type="compliance.kyccase", target_id=str(case.pk))
    return list(rows.filter(action=action) if action else rows)


def test_a_submission_opens_a_case_with_hashed_document_numbers(applicant, settings):
    settings.KYC_DOCUMENT_SALT = "pepper"
    case = submit(applicant, country="fr")
    assert (case.status, case.requested_tier, case.country) == (KycStatus.SUBMITTED, 2, "FR")
    (document,) = KycDocument.objects.filter(case=case)
    assert document.number_hash == kyc_document_number_hash("ab123456")
    assert document.number_hash.startswith("0x")
    assert len(document.number_hash) == 66
    (event,) = events(case)
    assert event.action == "kyc.submit"
    assert event.actor_label == "system"
    assert event.before is None
    assert event.after["status"] == "SUBMITTED"
    assert event.after["documents"][0]["number_hash"] == document.number_hash


def test_the_number_hash_is_salted_and_normalised(settings):
    settings.KYC_DOCUMENT_SALT = "one"
    first = kyc_document_number_hash("ab-12 34")
    assert first == kyc_document_number_hash("AB1234")
    settings.KYC_DOCUMENT_SALT = "two"
    assert kyc_document_number_hash("AB1234") != first


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"documents": []}, "at least one"),
        ({"documents": [passport(expires_on=dt.date(2020, 1, 1))]}, "expired on 2020-01-01"),
        ({"documents": [passport(document_type="SELFIE")]}, "unknown document type"),
        ({"documents": [passport(number=" -- ")]}, "letters or digits"),
        ({"documents": [passport(issuing_country="France")]}, "issuing country"),
        ({"country": "XXX"}, "country of residence"),
        ({"requested_tier": 0}, "already has KYC tier 0"),
    ],
)
def test_a_bad_submission_is_refused_and_stores_nothing(applicant, fields, message):
    with pytest.raises(KycError, match=message):
        submit(applicant, **fields)
    assert not KycCase.objects.exists()
    assert not KycDocument.objects.exists()
    assert not AuditEvent.objects.exists()


def test_an_account_has_one_open_case_at_a_time(applicant):
    first = submit(applicant)
    with pytest.raises(KycError, match=f"#{first.pk} is still"):
        submit(applicant)
    assert KycCase.objects.count() == 1


def test_review_then_approval_gives_the_account_its_tier_and_country(applicant, reviewer):
    case = in_review(applicant, reviewer)
    assert (case.status, case.reviewer) == (KycStatus.IN_REVIEW, reviewer.user)
    approved = kyc_case_approve(actor=reviewer, case=case, tier=1, notes="ok for tier 1")
    applicant.refresh_from_db()
    assert (applicant.kyc_tier, applicant.country) == (1, "FR")
    assert approved.status == KycStatus.APPROVED
    assert approved.approved_tier == 1
    assert approved.decided_at is not None
    (event,) = events(case, "kyc.approve")
    assert event.actor == reviewer.user
    assert event.ip_address == "10.0.0.7"
    assert event.before["status"] == "IN_REVIEW"
    assert event.after["status"] == "APPROVED"
    assert (event.before["account_kyc_tier"], event.before["account_country"]) == (0, "")
    assert (event.after["account_kyc_tier"], event.after["account_country"]) == (1, "FR")
    assert event.after["approved_tier"] == 1


@pytest.mark.parametrize(
    ("decide", "status", "action"),
    [
        (kyc_case_reject, KycStatus.REJECTED, "kyc.reject"),
        (kyc_case_request_info, KycStatus.MORE_INFO, "kyc.request_info"),
    ],
)
def test_rejection_and_request_for_information_keep_the_tier(
    applicant, reviewer, decide, status, action
):
    case = in_review(applicant, reviewer)
    decided = decide(actor=reviewer, case=case, notes="  the passport photo is blurred ")
    applicant.refresh_from_db()
    assert applicant.kyc_tier == 0
    assert (decided.status, decided.reviewer_notes) == (status, "the passport photo is blurred")
    (event,) = events(case, action)
    assert event.reason == "the passport photo is blurred"
    assert (event.before["status"], event.after["status"]) == ("IN_REVIEW", status)


@pytest.mark.parametrize("decide", [kyc_case_reject, kyc_case_request_info])
def test_a_decision_against_the_trader_needs_notes(applicant, reviewer, decide):
    case = in_review(applicant, reviewer)
    with pytest.raises(KycError, match="needs notes"):
        decide(actor=reviewer, case=case, notes="   ")
    case.refresh_from_db()
    assert case.status == KycStatus.IN_REVIEW


def test_a_resubmission_after_more_info_returns_the_case_to_the_queue(applicant, reviewer):
    case = in_review(applicant, reviewer)
    kyc_case_request_info(actor=reviewer, case=case, notes="add proof of address")
    resubmitted = kyc_case_resubmit(
        case=case,
        documents=[passport(number="U-77", document_type="PROOF_OF_ADDRESS")],
    )
    assert resubmitted.status == KycStatus.SUBMITTED
    assert resubmitted.documents.count() == 2
    (event,) = events(case, "kyc.resubmit")
    assert (event.before["status"], event.after["status"]) == ("MORE_INFO", "SUBMITTED")
    assert [d["document_type"] for d in event.after["documents"]] == ["PROOF_OF_ADDRESS"]
    # And it can be reviewed and approved as any case.
    kyc_case_start_review(actor=reviewer, case=case)
    kyc_case_approve(actor=reviewer, case=case, tier=2)
    applicant.refresh_from_db()
    assert applicant.kyc_tier == 2


def test_each_step_writes_exactly_one_audit_event(applicant, reviewer):
    case = in_review(applicant, reviewer)
    kyc_case_request_info(actor=reviewer, case=case, notes="more")
    kyc_case_resubmit(case=case, documents=[passport(number="X1")])
    kyc_case_start_review(actor=reviewer, case=case)
    kyc_case_approve(actor=reviewer, case=case, tier=2)
    assert [e.action for e in reversed(events(case))] == [
        "kyc.submit",
        "kyc.start_review",
        "kyc.request_info",
        "kyc.resubmit",
        "kyc.start_review",
        "kyc.approve",
    ]


@pytest.mark.parametrize(
    ("step", "status"),
    [
        (lambda actor, case: kyc_case_approve(actor=actor, case=case, tier=1), "Submitted"),
        (lambda actor, case: kyc_case_reject(actor=actor, case=case, notes="no"), "Submitted"),
        (lambda actor, case: kyc_case_resubmit(case=case, documents=[passport()]), "already"),
    ],
)
def test_a_step_the_state_machine_forbids_is_a_clear_error(applicant, reviewer, step, status):
    case = submit(applicant)
    with pytest.raises(KycTransitionError, match=f"#{case.pk} is {status}"):
        step(reviewer, case)
    case.refresh_from_db()
    applicant.refresh_from_db()
    assert case.status == KycStatus.SUBMITTED
    assert applicant.kyc_tier == 0
    assert len(events(case)) == 1  # the submission's


def test_a_decided_case_is_final(applicant, reviewer):
    case = in_review(applicant, reviewer)
    kyc_case_reject(actor=reviewer, case=case, notes="forged")
    with pytest.raises(KycTransitionError, match="is Rejected"):
        kyc_case_approve(actor=reviewer, case=case, tier=3)
    with pytest.raises(KycTransitionError):
        kyc_case_start_review(actor=reviewer, case=case)
    applicant.refresh_from_db()
    assert applicant.kyc_tier == 0


@pytest.mark.parametrize("tier", [0, -1, "2"])
def test_approval_needs_a_tier_from_one(applicant, reviewer, tier):
    case = in_review(applicant, reviewer)
    with pytest.raises(KycError, match="approved tier"):
        kyc_case_approve(actor=reviewer, case=case, tier=tier)


def test_the_platform_cannot_review(applicant):
    case = submit(applicant)
    with pytest.raises(KycError, match="reviewed by staff"):
        kyc_case_start_review(actor=SYSTEM, case=case)


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_deciding_at_once_act_one_after_the_other(django_user_model):
    applicant = AccountFactory(kyc_tier=0, country="")
    first = Actor(user=django_user_model.objects.create_user("kyc-a", is_staff=True))
    second = Actor(user=django_user_model.objects.create_user("kyc-b", is_staff=True))
    case = kyc_case_start_review(actor=first, case=submit(applicant))
    barrier = threading.Barrier(2)
    outcomes = []

    def decide(actor, step):
        try:
            barrier.wait()
            step(actor)
            outcomes.append("ok")
        except KycTransitionError:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [
        threading.Thread(
            target=decide,
            args=(first, lambda a: kyc_case_approve(actor=a, case=case, tier=2)),
        ),
        threading.Thread(
            target=decide,
            args=(second, lambda a: kyc_case_reject(actor=a, case=case, notes="no")),
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok", "refused"]
    case.refresh_from_db()
    applicant.refresh_from_db()
    decisions = AuditEvent.objects.filter(action__in=["kyc.approve", "kyc.reject"])
    assert decisions.count() == 1
    assert applicant.kyc_tier == (2 if case.status == KycStatus.APPROVED else 0)
    assert connection.in_atomic_block is False


# --- The admin -----------------------------------------------------------------------


@pytest.fixture
def officer_client(client, staff):
    staff.user_permissions.set(
        Permission.objects.filter(
            codename__in=["review_kyc", "view_kyccase", "view_kycdocument", "view_account"]
        )
    )
    client.force_login(staff)
    return client


def test_the_queue_filters_searches_and_pages_by_date(officer_client, applicant, reviewer):
    waiting = submit(applicant)
    other = AccountFactory(kyc_tier=0, country="")
    reviewed = in_review(other, reviewer)
    queue = officer_client.get("/admin/compliance/kyccase/", {"status__exact": "SUBMITTED"})
    html = queue.content.decode()
    assert queue.status_code == 200
    assert applicant.wallet_address in html
    assert other.wallet_address not in html
    found = officer_client.get("/admin/compliance/kyccase/", {"q": other.wallet_address})
    assert f"/admin/compliance/kyccase/{reviewed.pk}/change/" in found.content.decode()
    assert f"/admin/compliance/kyccase/{waiting.pk}/change/" not in found.content.decode()
    assert "created_at__year=" in html  # the date hierarchy


def test_the_case_page_shows_documents_account_and_earlier_cases(
    officer_client, applicant, reviewer
):
    earlier = in_review(applicant, reviewer)
    kyc_case_reject(actor=reviewer, case=earlier, notes="blurred")
    case = submit(applicant, documents=[passport(number="ZZ-9", issuing_country="DE")])
    page = officer_client.get(f"/admin/compliance/kyccase/{case.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert kyc_document_number_hash("ZZ9") in html
    assert "ZZ-9" not in html
    assert f"/admin/exchange/account/{applicant.pk}/change/" in html
    assert f"/admin/compliance/kyccase/{earlier.pk}/change/" in html
    assert 'value="start_review"' in html
    assert 'name="_save"' not in html  # the page edits nothing


def test_a_step_refused_in_the_admin_is_a_message_and_changes_nothing(
    officer_client, applicant, reviewer
):
    case = in_review(applicant, reviewer)
    url = f"/admin/compliance/kyccase/{case.pk}/review/"
    for data, message in [
        ({"step": "approve", "tier": "two"}, "whole number"),
        ({"step": "reject", "notes": " "}, "needs notes"),
        ({"step": "start_review"}, "already in review"),
        ({"step": "launder"}, "unknown review step"),
    ]:
        response = officer_client.post(url, data, follow=True)
        assert response.status_code == 200
        assert message in response.content.decode().lower()
    case.refresh_from_db()
    assert case.status == KycStatus.IN_REVIEW
    assert len(events(case)) == 2  # submit and start review


def test_the_review_url_takes_only_posts(officer_client, applicant):
    case = submit(applicant)
    response = officer_client.get(f"/admin/compliance/kyccase/{case.pk}/review/")
    assert response.status_code == 405


def test_the_bulk_action_starts_review_of_submitted_cases(officer_client, staff, applicant):
    case = submit(applicant)
    officer_client.post(
        "/admin/compliance/kyccase/",
        {"action": "start_review", "_selected_action": [case.pk]},
    )
    case.refresh_from_db()
    assert (case.status, case.reviewer) == (KycStatus.IN_REVIEW, staff)
