"""What stops an account from trading (checked when an order is placed), from signing
in, and from moving funds in and out (checked by the vault's services)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from compliance.models import (
    MIN_TRADING_KYC_TIER,
    JurisdictionRule,
    KycFundingLimit,
    KycTierLimit,
)
from exchange.models import Account, AccountStatus, Asset, Market, MarketStatus
from portfolio.models import VaultOperation, VaultOperationKind, VaultOperationStatus

# A tier's "daily" deposit and withdrawal limits hold over any 24 hours, not per
# calendar day: a trader cannot double them across midnight.
DAILY_LIMIT_WINDOW = timedelta(hours=24)

_RULES_SQL = f"""
SELECT
    a.status,
    a.kyc_tier,
    a.country,
    (SELECT reason FROM {JurisdictionRule._meta.db_table}
      WHERE country = a.country AND a.country <> '' AND (market_id IS NULL OR market_id = %s)
      ORDER BY market_id NULLS FIRST LIMIT 1),
    (SELECT max_order_notional FROM {KycTierLimit._meta.db_table}
      WHERE kyc_tier = a.kyc_tier AND quote_id = %s),
    CASE WHEN %s THEN (SELECT last_price FROM market_last_price WHERE market_id = %s) END
FROM {Account._meta.db_table} a
WHERE a.id = %s
FOR SHARE OF a
"""


@dataclass(frozen=True, slots=True)
class GateRefusal:
    code: str
    message: str


def placement_refusal(
    *,
    account: Account,
    market: Market,
    notional: Decimal | None,
    quantity: Decimal | None = None,
) -> GateRefusal | None:
    """Why ``account`` may not place an order of ``notional`` (quote units) in
    ``market``, or None when it may. An order with no price of its own (a market sell)
    has no notional: give its ``quantity`` instead, valued for the KYC tier's order
    limit at the market's last trade price (not limited before the market's first
    trade).

    Run inside the placement's transaction: the account is read as it is now (not as
    the caller loaded it) and its row stays share-locked until the order and its
    command commit. A freeze (which locks the row to update it) therefore either
    waits for this order and then cancels it through the journal, or commits first
    and this order is refused: no order slips past a freeze."""
    if market.status == MarketStatus.HALTED:
        return GateRefusal("MARKET_HALTED", f"{market.symbol} is halted")
    if market.status != MarketStatus.OPEN:
        return GateRefusal("MARKET_NOT_OPEN", f"{market.symbol} is {market.status}")
    with connection.cursor() as cursor:
        # The account and both rules in one round trip: the first jurisdiction rule
        # that applies, and the tier's order limit in this quote asset.
        mark = notional is None and quantity is not None
        cursor.execute(_RULES_SQL, [market.pk, market.quote_id, mark, market.pk, account.pk])
        status, kyc_tier, country, restriction, max_notional, last_price = cursor.fetchone()
    if mark and last_price is not None:
        notional = last_price * quantity
    if status == AccountStatus.FROZEN:
        return GateRefusal("ACCOUNT_FROZEN", "this account is frozen; contact support")
    if status != AccountStatus.ACTIVE:
        return GateRefusal("ACCOUNT_NOT_ACTIVE", f"account is {status}")
    if kyc_tier < MIN_TRADING_KYC_TIER:
        return GateRefusal("KYC_REQUIRED", "complete identity verification before trading")
    if restriction is not None:
        return GateRefusal(
            "JURISDICTION_RESTRICTED",
            f"{market.symbol} is not available in {country}: {restriction}",
        )
    if notional is not None and max_notional is not None and notional > max_notional:
        return GateRefusal(
            "KYC_LIMIT_EXCEEDED",
            f"orders above {max_notional} {market.quote.symbol} need a higher KYC tier "
            f"than {kyc_tier}",
        )
    return None


def jurisdiction_block(country: str) -> str | None:
    """Why residents of ``country`` may use no market at all (a rule for every market),
    or None."""
    if not country:
        return None
    return (
        JurisdictionRule.objects.filter(country=country, market__isnull=True)
        .values_list("reason", flat=True)
        .first()
    )


def _jurisdiction_refusal(account: Account, what: str) -> GateRefusal | None:
    reason = jurisdiction_block(account.country)
    if reason is None:
        return None
    return GateRefusal(
        "JURISDICTION_RESTRICTED", f"{what} is not available in {account.country}: {reason}"
    )


def sign_in_refusal(*, account: Account) -> GateRefusal | None:
    """Why ``account`` may not sign in, or None when it may."""
    return _jurisdiction_refusal(account, "the exchange")


def _moved_in_window(account: Account, asset: Asset, kind: str, statuses: list[str]) -> Decimal:
    since = timezone.now() - DAILY_LIMIT_WINDOW
    total = VaultOperation.objects.filter(
        account=account, asset=asset, kind=kind, status__in=statuses, created_at__gte=since
    ).aggregate(total=Sum("amount"))["total"]
    return total or Decimal(0)


def _funding_limit(account: Account, asset: Asset) -> KycFundingLimit | None:
    return KycFundingLimit.objects.filter(kyc_tier=account.kyc_tier, asset=asset).first()


def _over_daily_limit(
    *,
    code: str,
    what: str,
    amount: Decimal,
    so_far: Decimal,
    limit: Decimal,
    asset: Asset,
    tier: int,
) -> GateRefusal | None:
    if so_far + amount <= limit:
        return None
    room = max(limit - so_far, Decimal(0))
    return GateRefusal(
        code,
        f"KYC tier {tier} may {what} {_plain(limit)} {asset.symbol} in 24 hours; "
        f"{_plain(so_far)} already, so at most {_plain(room)} more",
    )


def _plain(amount: Decimal) -> str:
    """``amount`` without trailing zeros or exponent: 100.00000000 → 100."""
    return f"{amount.normalize():f}"


def deposit_refusal(*, account: Account, asset: Asset, amount: Decimal) -> GateRefusal | None:
    """Why a deposit of ``amount`` may not be credited to ``account``, or None. Call
    while holding the lock on the account's available balance of ``asset``, so that
    concurrent deposits are counted one after the other."""
    limit = _funding_limit(account, asset)
    if limit is None or limit.daily_deposit_max is None:
        return None
    return _over_daily_limit(
        code="DAILY_DEPOSIT_LIMIT_EXCEEDED",
        what="deposit",
        amount=amount,
        so_far=_moved_in_window(
            account, asset, VaultOperationKind.DEPOSIT, [VaultOperationStatus.COMPLETED]
        ),
        limit=limit.daily_deposit_max,
        asset=asset,
        tier=account.kyc_tier,
    )


# A withdrawal counts against the limit from its request on, unless it was refused or
# failed (its funds went back to the trader).
_COUNTED_WITHDRAWALS = [
    VaultOperationStatus.REQUESTED,
    VaultOperationStatus.APPROVED,
    VaultOperationStatus.PROCESSING,
    VaultOperationStatus.COMPLETED,
]


def withdrawal_refusal(*, account: Account, asset: Asset, amount: Decimal) -> GateRefusal | None:
    """Why ``account`` may not withdraw ``amount`` of ``asset``, or None. Call while
    holding the lock on the account's available balance of ``asset``, so that
    concurrent requests are counted one after the other."""
    refusal = _jurisdiction_refusal(account, "withdrawing")
    if refusal is not None:
        return refusal
    limit = _funding_limit(account, asset)
    if limit is None or limit.daily_withdrawal_max is None:
        return None
    return _over_daily_limit(
        code="DAILY_WITHDRAWAL_LIMIT_EXCEEDED",
        what="withdraw",
        amount=amount,
        so_far=_moved_in_window(
            account, asset, VaultOperationKind.WITHDRAWAL, _COUNTED_WITHDRAWALS
        ),
        limit=limit.daily_withdrawal_max,
        asset=asset,
        tier=account.kyc_tier,
    )
