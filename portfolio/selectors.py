"""Reads of money: balances, postings, fee rates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from exchange.models import Account, Market, Trade
from portfolio.models import Balance, FeeTier, Posting

FEE_VOLUME_WINDOW = timedelta(days=30)


def balance_list(*, account: Account) -> QuerySet[Balance]:
    return Balance.objects.filter(account=account).select_related("asset").order_by("asset")


def posting_list(*, account: Account) -> QuerySet[Posting]:
    return (
        Posting.objects.filter(ledger_account__owner=account)
        .select_related("transaction", "ledger_account__asset")
        .order_by("-id")
    )


@dataclass(frozen=True, slots=True)
class FeeRates:
    maker: Decimal
    taker: Decimal
    tier: FeeTier | None = None


def account_volume_30d(*, account: Account, quote_id: int) -> Decimal:
    """Notional the trader traded in the last 30 days in markets quoted in ``quote_id``."""
    since = timezone.now() - FEE_VOLUME_WINDOW
    total = Trade.objects.filter(
        Q(buyer=account) | Q(seller=account),
        market__quote_id=quote_id,
        executed_at__gte=since,
    ).aggregate(total=Sum("quote_quantity"))["total"]
    return total or Decimal(0)


def fee_rates_for(*, account: Account, market: Market) -> FeeRates:
    """The maker and taker rates ``account`` pays in ``market``: the market's own, or
    its volume tier's where those are lower."""
    volume = account_volume_30d(account=account, quote_id=market.quote_id)
    tier = (
        FeeTier.objects.filter(quote_id=market.quote_id, min_volume_30d__lte=volume)
        .order_by("-min_volume_30d")
        .first()
    )
    if tier is None:
        return FeeRates(market.maker_fee_rate, market.taker_fee_rate)
    return FeeRates(
        min(market.maker_fee_rate, tier.maker_fee_rate),
        min(market.taker_fee_rate, tier.taker_fee_rate),
        tier,
    )
