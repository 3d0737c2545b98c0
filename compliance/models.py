"""The rules a trader must meet to trade: KYC-tier limits and jurisdiction rules.

Order placement checks them (``compliance.gates``); staff keep them in the admin.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from dex.db import AmountField, CreatedAtField, UpdatedAtField, updated_at_trigger
from exchange.models import Asset, Market

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
