"""The compliance back office's records: the rules a trader must meet (KYC-tier
limits, jurisdiction rules; checked by ``compliance.gates``), KYC cases, account
freezes and beneficial owners, surveillance alerts, and the append-only audit trail.
"""

from __future__ import annotations

import pghistory
import pgtrigger
from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from dex.db import (
    HASH_REGEX,
    AmountField,
    CreatedAtField,
    HashField,
    UpdatedAtField,
    append_only_triggers,
    created_as_trigger,
    truncate_keeps_history,
    updated_at_trigger,
)
from exchange.models import Account, Asset, Market
from portfolio.models import FeeTier

# Below this tier an account may sign in, deposit and withdraw, but not trade.
MIN_TRADING_KYC_TIER = 1


class KycTierLimit(models.Model):
    """The largest single order a KYC tier may place, in a quote asset. A tier with no
    limit for a quote asset trades there without one."""

    kyc_tier = models.PositiveSmallIntegerField()
    quote = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    max_order_notional = AmountField(help_text="Price × quantity of one order, in the quote.")
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["kyc_tier", "quote"]
        verbose_name = "KYC tier limit"
        constraints = [
            models.UniqueConstraint(fields=["kyc_tier", "quote"], name="kyctierlimit_unique"),
            models.CheckConstraint(
                condition=Q(max_order_notional__gt=0), name="kyctierlimit_positive"
            ),
        ]
        triggers = [updated_at_trigger()]

    def __str__(self) -> str:
        return f"tier {self.kyc_tier}: {self.max_order_notional} {self.quote}"


class KycFundingLimit(models.Model):
    """How much a KYC tier may deposit and withdraw of an asset in any 24 hours
    (``compliance.gates.DAILY_LIMIT_WINDOW``). A blank limit, or no row, is no limit;
    zero allows none."""

    kyc_tier = models.PositiveSmallIntegerField()
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    daily_deposit_max = AmountField(
        null=True, blank=True, help_text="Deposits credited in any 24 hours; blank: no limit."
    )
    daily_withdrawal_max = AmountField(
        null=True,
        blank=True,
        help_text="Withdrawals requested in any 24 hours (less refused ones); blank: no limit.",
    )
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["kyc_tier", "asset"]
        verbose_name = "KYC funding limit"
        constraints = [
            models.UniqueConstraint(fields=["kyc_tier", "asset"], name="kycfundinglimit_unique"),
            models.CheckConstraint(
                condition=Q(daily_deposit_max__isnull=True) | Q(daily_deposit_max__gte=0),
                name="kycfundinglimit_deposit_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(daily_withdrawal_max__isnull=True) | Q(daily_withdrawal_max__gte=0),
                name="kycfundinglimit_withdrawal_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(daily_deposit_max__isnull=False)
                | Q(daily_withdrawal_max__isnull=False),
                name="kycfundinglimit_sets_a_limit",
            ),
        ]
        triggers = [updated_at_trigger()]

    def __str__(self) -> str:
        return f"tier {self.kyc_tier}: {self.asset} per day"


class JurisdictionRule(models.Model):
    """Residents of ``country`` may not trade ``market`` (every market when blank)."""

    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2.")
    market = models.ForeignKey(
        Market, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=255)
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["country", "market"]
        constraints = [
            models.CheckConstraint(
                condition=Q(country__regex=r"^[A-Z]{2}$"), name="jurisdiction_country_format"
            ),
            models.UniqueConstraint(
                fields=["country", "market"],
                nulls_distinct=False,
                name="jurisdiction_unique",
            ),
        ]
        triggers = [updated_at_trigger()]

    def __str__(self) -> str:
        return f"{self.country}: {self.market or 'all markets'}"


# --------------------------------------------------------------------------------------
# Audit trail
# --------------------------------------------------------------------------------------


class AuditEvent(models.Model):
    """One thing staff (or the platform on their behalf) did: who, what, to which
    object, the object's state before and after, from where, when. Written by the
    services in the same transaction as the change; never changed or deleted."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty for the platform's own jobs.",
    )
    actor_label = models.CharField(
        max_length=150, help_text="The actor's username when it acted (or 'system')."
    )
    action = models.CharField(max_length=64, help_text="A dotted verb, e.g. account.freeze.")
    target_type = models.CharField(max_length=100, help_text="app_label.model of the object.")
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=255)
    reason = models.TextField(blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = CreatedAtField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id", "-created_at"], name="audit_target"),
            models.Index(fields=["action", "-created_at"], name="audit_action"),
            models.Index(fields=["-created_at"], name="audit_created"),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(action=""), name="auditevent_action_set"),
            models.CheckConstraint(condition=~Q(actor_label=""), name="auditevent_actor_set"),
        ]
        triggers = [
            *append_only_triggers(),
            # Never emptied while the staff and the venue it is the record of remain.
            truncate_keeps_history(
                "EXISTS (SELECT 1 FROM auth_user)"  # settings.AUTH_USER_MODEL is auth.User
                " OR EXISTS (SELECT 1 FROM exchange_account)"
                " OR EXISTS (SELECT 1 FROM exchange_market)",
                "the staff and the venue it records remain",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.target_repr}"


# --------------------------------------------------------------------------------------
# KYC
# --------------------------------------------------------------------------------------


class KycStatus(models.TextChoices):
    SUBMITTED = "SUBMITTED"
    IN_REVIEW = "IN_REVIEW"
    MORE_INFO = "MORE_INFO", "more info requested"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


KYC_OPEN_STATUSES = (KycStatus.SUBMITTED, KycStatus.IN_REVIEW, KycStatus.MORE_INFO)


class KycCase(models.Model):
    """A trader's application for a KYC tier and its review."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="kyc_cases")
    status = models.CharField(max_length=9, choices=KycStatus.choices, default=KycStatus.SUBMITTED)
    requested_tier = models.PositiveSmallIntegerField()
    approved_tier = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The tier granted when approved."
    )
    country = models.CharField(max_length=2, help_text="Declared residence, ISO 3166-1 alpha-2.")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    reviewer_notes = models.TextField(blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "KYC case"
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=Q(status__in=KYC_OPEN_STATUSES),
                name="kyccase_one_open_per_account",
            ),
            models.CheckConstraint(
                condition=Q(country__regex=r"^[A-Z]{2}$"), name="kyccase_country_format"
            ),
            models.CheckConstraint(
                condition=~Q(status=KycStatus.APPROVED) | Q(approved_tier__isnull=False),
                name="kyccase_approved_has_tier",
            ),
            models.CheckConstraint(
                condition=Q(status__in=KYC_OPEN_STATUSES) | Q(decided_at__isnull=False),
                name="kyccase_decided_at_set",
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="kyccase_queue")]
        triggers = [
            updated_at_trigger(),
            created_as_trigger(KycStatus.SUBMITTED, "KYC cases"),
            pgtrigger.FSM(
                name="status_transitions",
                field="status",
                transitions=[
                    (KycStatus.SUBMITTED, KycStatus.IN_REVIEW),
                    (KycStatus.IN_REVIEW, KycStatus.APPROVED),
                    (KycStatus.IN_REVIEW, KycStatus.REJECTED),
                    (KycStatus.IN_REVIEW, KycStatus.MORE_INFO),
                    (KycStatus.MORE_INFO, KycStatus.SUBMITTED),
                ],
            ),
        ]

    def __str__(self) -> str:
        return f"KYC #{self.pk} {self.account} ({self.status})"


class KycDocumentType(models.TextChoices):
    PASSPORT = "PASSPORT"
    NATIONAL_ID = "NATIONAL_ID", "national ID"
    DRIVING_LICENCE = "DRIVING_LICENCE"
    RESIDENCE_PERMIT = "RESIDENCE_PERMIT"
    PROOF_OF_ADDRESS = "PROOF_OF_ADDRESS"


class KycDocument(models.Model):
    """What a document says about itself, never the document: its number is kept only
    as a salted SHA-256 (to spot one document used by two accounts)."""

    case = models.ForeignKey(KycCase, on_delete=models.PROTECT, related_name="documents")
    document_type = models.CharField(max_length=16, choices=KycDocumentType.choices)
    number_hash = HashField(help_text="0x + SHA-256 of the salted, normalised number.")
    issuing_country = models.CharField(max_length=2)
    expires_on = models.DateField(null=True, blank=True)
    created_at = CreatedAtField()

    class Meta:
        ordering = ["case", "id"]
        verbose_name = "KYC document"
        constraints = [
            models.CheckConstraint(
                condition=Q(number_hash__regex=HASH_REGEX), name="kycdocument_hash_format"
            ),
            models.CheckConstraint(
                condition=Q(issuing_country__regex=r"^[A-Z]{2}$"),
                name="kycdocument_country_format",
            ),
        ]
        indexes = [models.Index(fields=["number_hash"], name="kycdocument_number")]
        triggers = append_only_triggers()

    def __str__(self) -> str:
        return f"{self.get_document_type_display()} ({self.issuing_country})"


# --------------------------------------------------------------------------------------
# Account controls
# --------------------------------------------------------------------------------------


class AccountFreeze(models.Model):
    """A freeze of an account: why, by whom, and when (and by whom) it was lifted.
    At most one freeze of an account is in force at a time."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="freezes")
    reason = models.TextField()
    frozen_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    frozen_at = models.DateTimeField(db_default=Now())
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    lifted_at = models.DateTimeField(null=True, blank=True)
    lift_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-frozen_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=Q(lifted_at__isnull=True),
                name="accountfreeze_one_in_force",
            ),
            models.CheckConstraint(condition=~Q(reason=""), name="accountfreeze_reason_set"),
            models.CheckConstraint(
                condition=Q(lifted_at__isnull=True, lifted_by__isnull=True)
                | Q(lifted_at__isnull=False, lifted_by__isnull=False),
                name="accountfreeze_lift_complete",
            ),
        ]
        triggers = [
            pgtrigger.Protect(name="protect_delete", operation=pgtrigger.Delete),
            # Only the lift may be written later, and only once.
            pgtrigger.ReadOnly(
                name="lift_once",
                fields=["account", "reason", "frozen_by", "frozen_at"],
            ),
            pgtrigger.Protect(
                name="lifted_is_final",
                operation=pgtrigger.Update,
                condition=pgtrigger.Q(old__lifted_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"freeze of {self.account} ({'lifted' if self.lifted_at else 'in force'})"


class BeneficialOwner(models.Model):
    """A person or firm behind one or more accounts. Linking accounts to their owner
    lets surveillance see both sides of a trade between them as one party."""

    name = models.CharField(max_length=128)
    reference = models.CharField(max_length=64, unique=True, help_text="Internal client id.")
    accounts = models.ManyToManyField(
        Account, through="BeneficialOwnership", related_name="beneficial_owners"
    )
    created_at = CreatedAtField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.reference})"


class BeneficialOwnership(models.Model):
    owner = models.ForeignKey(BeneficialOwner, on_delete=models.PROTECT)
    account = models.OneToOneField(
        Account, on_delete=models.PROTECT, related_name="beneficial_ownership"
    )
    created_at = CreatedAtField()

    class Meta:
        ordering = ["owner", "account"]

    def __str__(self) -> str:
        return f"{self.account} → {self.owner}"


# --------------------------------------------------------------------------------------
# Surveillance
# --------------------------------------------------------------------------------------


class AlertKind(models.TextChoices):
    WASH_TRADING = "WASH_TRADING"
    SPOOFING = "SPOOFING", "spoofing / layering"
    UNUSUAL_VOLUME = "UNUSUAL_VOLUME"
    PRICE_MOVE = "PRICE_MOVE", "unusual price move"
    ORDER_BURST = "ORDER_BURST", "order/cancel burst"


class AlertSeverity(models.TextChoices):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class AlertStatus(models.TextChoices):
    OPEN = "OPEN"
    ESCALATED = "ESCALATED"
    FALSE_POSITIVE = "FALSE_POSITIVE", "closed: false positive"
    REPORTED = "REPORTED", "closed: reported"


ALERT_OPEN_STATUSES = (AlertStatus.OPEN, AlertStatus.ESCALATED)


class SurveillanceAlert(models.Model):
    """A pattern a detector found, with the evidence (orders, trades, timings) it
    found it in. ``dedupe_key`` makes a rerun over the same window raise nothing new."""

    kind = models.CharField(max_length=16, choices=AlertKind.choices)
    severity = models.CharField(max_length=6, choices=AlertSeverity.choices)
    status = models.CharField(max_length=14, choices=AlertStatus.choices, default=AlertStatus.OPEN)
    market = models.ForeignKey(
        Market, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    account = models.ForeignKey(
        Account,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="surveillance_alerts",
        help_text="The account the pattern points at, where there is one.",
    )
    summary = models.CharField(max_length=255)
    evidence = models.JSONField(default=dict)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    dedupe_key = models.CharField(max_length=200, unique=True)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="alert_queue"),
            models.Index(fields=["account", "-created_at"], name="alert_account"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(window_end__gte=F("window_start")), name="alert_window_order"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ALERT_OPEN_STATUSES, closed_at__isnull=True)
                | (~Q(status__in=ALERT_OPEN_STATUSES) & Q(closed_at__isnull=False)),
                name="alert_closed_at_matches_status",
            ),
        ]
        triggers = [
            updated_at_trigger(),
            created_as_trigger(AlertStatus.OPEN, "surveillance alerts"),
            pgtrigger.Protect(name="protect_delete", operation=pgtrigger.Delete),
            pgtrigger.ReadOnly(
                name="evidence_read_only",
                fields=[
                    "kind",
                    "market",
                    "account",
                    "evidence",
                    "window_start",
                    "window_end",
                    "dedupe_key",
                    "created_at",
                ],
            ),
            pgtrigger.FSM(
                name="status_transitions",
                field="status",
                transitions=[
                    (AlertStatus.OPEN, AlertStatus.ESCALATED),
                    (AlertStatus.OPEN, AlertStatus.FALSE_POSITIVE),
                    (AlertStatus.OPEN, AlertStatus.REPORTED),
                    (AlertStatus.ESCALATED, AlertStatus.FALSE_POSITIVE),
                    (AlertStatus.ESCALATED, AlertStatus.REPORTED),
                ],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"


class AlertNote(models.Model):
    alert = models.ForeignKey(SurveillanceAlert, on_delete=models.PROTECT, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    body = models.TextField()
    created_at = CreatedAtField()

    class Meta:
        ordering = ["alert", "created_at", "id"]
        constraints = [models.CheckConstraint(condition=~Q(body=""), name="alertnote_body_set")]
        triggers = append_only_triggers()

    def __str__(self) -> str:
        return f"note on alert #{self.alert_id}"


# --------------------------------------------------------------------------------------
# Permissions for the back office's actions
# --------------------------------------------------------------------------------------


class BackOffice(models.Model):
    """No table: the permissions of the back office's actions that are not edits of
    one model, given to the roles (groups) that may take them."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("review_kyc", "Can review and decide KYC cases"),
            ("freeze_account", "Can freeze and unfreeze accounts"),
            ("close_account", "Can close accounts"),
            ("cancel_orders", "Can force-cancel an account's or a market's orders"),
            ("control_market", "Can halt and resume markets and change their fees and limits"),
            ("triage_alert", "Can assign, note, escalate and close surveillance alerts"),
            ("run_surveillance", "Can run the surveillance detectors on demand"),
            ("export_reports", "Can export trade, order and account reports"),
            ("view_venue", "Can see the venue overview and an account's 360° page"),
        ]

    def __str__(self) -> str:
        return "back office"


# --------------------------------------------------------------------------------------
# Change history
# --------------------------------------------------------------------------------------


def _change_history(tracked: type[models.Model], model_name: str) -> type[models.Model]:
    """An append-only table of every insert, update and delete of ``tracked``'s rows,
    each a snapshot of the row (``updated_at`` aside: a change is a change of
    something else). Triggers in the database write it, so a change made by raw SQL
    is recorded too; ``pgh_context`` holds the request's user id and URL when the
    change was made in the back office (``compliance.middleware``)."""
    return pghistory.create_event_model(
        tracked,
        pghistory.InsertEvent(),
        pghistory.UpdateEvent(),
        pghistory.DeleteEvent(),
        exclude=["updated_at"],
        obj_field=pghistory.ObjForeignKey(related_name="change_history"),
        context_field=pghistory.ContextJSONField(),
        append_only=True,
        app_label="compliance",
        model_name=model_name,
        abstract=False,
        meta={
            "ordering": ["-pgh_created_at", "-pgh_id"],
            "verbose_name": f"{tracked._meta.verbose_name} change",
        },
    )


AccountHistory = _change_history(Account, "AccountHistory")
MarketHistory = _change_history(Market, "MarketHistory")
FeeTierHistory = _change_history(FeeTier, "FeeTierHistory")
KycCaseHistory = _change_history(KycCase, "KycCaseHistory")
JurisdictionRuleHistory = _change_history(JurisdictionRule, "JurisdictionRuleHistory")
KycTierLimitHistory = _change_history(KycTierLimit, "KycTierLimitHistory")
KycFundingLimitHistory = _change_history(KycFundingLimit, "KycFundingLimitHistory")

# Every model whose changes are kept, and the table that keeps them.
CHANGE_HISTORY: dict[type[models.Model], type[models.Model]] = {
    history.pgh_tracked_model: history
    for history in (
        AccountHistory,
        MarketHistory,
        FeeTierHistory,
        KycCaseHistory,
        JurisdictionRuleHistory,
        KycTierLimitHistory,
        KycFundingLimitHistory,
    )
}
