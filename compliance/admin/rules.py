from django.contrib import admin

from compliance.models import JurisdictionRule, KycTierLimit


@admin.register(KycTierLimit)
class KycTierLimitAdmin(admin.ModelAdmin):
    list_display = ["kyc_tier", "quote", "max_order_notional", "updated_at"]
    list_filter = ["kyc_tier", "quote"]


@admin.register(JurisdictionRule)
class JurisdictionRuleAdmin(admin.ModelAdmin):
    list_display = ["country", "market", "reason", "updated_at"]
    list_filter = ["country"]
    search_fields = ["country", "reason"]
