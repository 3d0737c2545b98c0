"""The compliance rules in the admin: KYC-tier order limits, KYC-tier funding limits
and jurisdiction rules. Every save and delete goes through
``compliance.services.limits``, which records it in the audit trail; each rule's
"History" page shows its recorded changes."""

from django.contrib import admin

from compliance.models import JurisdictionRule, KycFundingLimit, KycTierLimit
from compliance.services.audit import Actor
from compliance.services.limits import compliance_rule_delete, compliance_rule_save


class ComplianceRuleAdmin(admin.ModelAdmin):
    object_history_template = "admin/compliance/change_history.html"
    readonly_fields = ["created_at", "updated_at"]

    def save_model(self, request, obj, form, change) -> None:
        compliance_rule_save(actor=Actor.from_request(request), rule=obj)

    def delete_model(self, request, obj) -> None:
        compliance_rule_delete(actor=Actor.from_request(request), rule=obj)

    def delete_queryset(self, request, queryset) -> None:
        actor = Actor.from_request(request)
        for rule in queryset.order_by("pk"):
            compliance_rule_delete(actor=actor, rule=rule)


@admin.register(KycTierLimit)
class KycTierLimitAdmin(ComplianceRuleAdmin):
    list_display = ["kyc_tier", "quote", "max_order_notional", "updated_at"]
    list_filter = ["kyc_tier", "quote"]


@admin.register(KycFundingLimit)
class KycFundingLimitAdmin(ComplianceRuleAdmin):
    list_display = ["kyc_tier", "asset", "daily_deposit_max", "daily_withdrawal_max", "updated_at"]
    list_filter = ["kyc_tier", "asset"]


@admin.register(JurisdictionRule)
class JurisdictionRuleAdmin(ComplianceRuleAdmin):
    list_display = ["country", "market", "reason", "updated_at"]
    list_filter = ["country"]
    search_fields = ["country", "reason"]
