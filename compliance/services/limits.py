"""Staff changes to the compliance rules: KYC-tier order limits, KYC-tier funding
(deposit and withdrawal) limits and jurisdiction rules. Each save or delete writes one
``AuditEvent`` with the rule's state before and after, in its transaction.

These run inside the admin's own transaction (its add, change and delete views are
atomic), so they join it rather than insist on being the outermost one.
"""

from __future__ import annotations

from compliance.models import JurisdictionRule, KycFundingLimit, KycTierLimit
from compliance.services.audit import Actor
from compliance.services.records import record_delete, record_save

ComplianceRule = KycTierLimit | KycFundingLimit | JurisdictionRule

_RULE_FIELDS: dict[type, list[str]] = {
    KycTierLimit: ["kyc_tier", "quote", "max_order_notional"],
    KycFundingLimit: ["kyc_tier", "asset", "daily_deposit_max", "daily_withdrawal_max"],
    JurisdictionRule: ["country", "market", "reason"],
}


def compliance_rule_save(*, actor: Actor, rule: ComplianceRule) -> ComplianceRule:
    """Create ``rule``, or save the changes made to it."""
    return record_save(actor=actor, record=rule, fields=_RULE_FIELDS[type(rule)])


def compliance_rule_delete(*, actor: Actor, rule: ComplianceRule) -> None:
    record_delete(actor=actor, record=rule, fields=_RULE_FIELDS[type(rule)])
