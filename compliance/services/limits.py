"""Staff changes to the compliance rules: KYC-tier order limits, KYC-tier funding
(deposit and withdrawal) limits and jurisdiction rules. Each save or delete writes one
``AuditEvent`` with the rule's state before and after, in its transaction.

These run inside the admin's own transaction (its add, change and delete views are
atomic), so they join it rather than insist on being the outermost one.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from compliance.models import JurisdictionRule, KycFundingLimit, KycTierLimit
from compliance.services.audit import Actor, audit_record, model_state

ComplianceRule = KycTierLimit | KycFundingLimit | JurisdictionRule

_RULE_FIELDS: dict[type, list[str]] = {
    KycTierLimit: ["kyc_tier", "quote", "max_order_notional"],
    KycFundingLimit: ["kyc_tier", "asset", "daily_deposit_max", "daily_withdrawal_max"],
    JurisdictionRule: ["country", "market", "reason"],
}


def _state(rule: ComplianceRule) -> dict[str, Any]:
    return model_state(rule, _RULE_FIELDS[type(rule)])


@transaction.atomic
def compliance_rule_save(*, actor: Actor, rule: ComplianceRule) -> ComplianceRule:
    """Create ``rule``, or save the changes made to it."""
    before = None
    if rule.pk is not None:
        stored = type(rule).objects.select_for_update().get(pk=rule.pk)
        before = _state(stored)
    rule.save()
    rule.refresh_from_db()  # the stored values (decimals at their scale) for the record
    audit_record(
        actor=actor,
        action=f"{rule._meta.model_name}.{'update' if before else 'create'}",
        target=rule,
        before=before,
        after=_state(rule),
    )
    return rule


@transaction.atomic
def compliance_rule_delete(*, actor: Actor, rule: ComplianceRule) -> None:
    stored = type(rule).objects.select_for_update().get(pk=rule.pk)
    audit_record(
        actor=actor, action=f"{rule._meta.model_name}.delete", target=stored, before=_state(stored)
    )
    stored.delete()
