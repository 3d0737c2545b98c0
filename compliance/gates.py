"""What stops an account from trading: checked when an order is placed."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import connection

from compliance.models import MIN_TRADING_KYC_TIER, JurisdictionRule, KycTierLimit
from exchange.models import Account, AccountStatus, Market, MarketStatus

_RULES_SQL = f"""
SELECT
    (SELECT reason FROM {JurisdictionRule._meta.db_table}
      WHERE country = %s AND country <> '' AND (market_id IS NULL OR market_id = %s)
      ORDER BY market_id NULLS FIRST LIMIT 1),
    (SELECT max_order_notional FROM {KycTierLimit._meta.db_table}
      WHERE kyc_tier = %s AND quote_id = %s)
"""


@dataclass(frozen=True, slots=True)
class GateRefusal:
    code: str
    message: str


def placement_refusal(
    *, account: Account, market: Market, notional: Decimal | None
) -> GateRefusal | None:
    """Why ``account`` may not place an order of ``notional`` (quote units; None when
    unknown, as for a market sell) in ``market``, or None when it may."""
    if account.status == AccountStatus.FROZEN:
        return GateRefusal("ACCOUNT_FROZEN", "this account is frozen; contact support")
    if account.status != AccountStatus.ACTIVE:
        return GateRefusal("ACCOUNT_NOT_ACTIVE", f"account is {account.status}")
    if market.status == MarketStatus.HALTED:
        return GateRefusal("MARKET_HALTED", f"{market.symbol} is halted")
    if market.status != MarketStatus.OPEN:
        return GateRefusal("MARKET_NOT_OPEN", f"{market.symbol} is {market.status}")
    if account.kyc_tier < MIN_TRADING_KYC_TIER:
        return GateRefusal("KYC_REQUIRED", "complete identity verification before trading")
    with connection.cursor() as cursor:
        # Both rules in one round trip: the first jurisdiction rule that applies, and
        # the tier's order limit in this quote asset.
        cursor.execute(_RULES_SQL, [account.country, market.pk, account.kyc_tier, market.quote_id])
        restriction, max_notional = cursor.fetchone()
    if restriction is not None:
        return GateRefusal(
            "JURISDICTION_RESTRICTED",
            f"{market.symbol} is not available in {account.country}: {restriction}",
        )
    if notional is not None and max_notional is not None and notional > max_notional:
        return GateRefusal(
            "KYC_LIMIT_EXCEEDED",
            f"orders above {max_notional} {market.quote.symbol} need a higher KYC tier "
            f"than {account.kyc_tier}",
        )
    return None
