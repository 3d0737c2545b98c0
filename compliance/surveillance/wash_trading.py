"""Wash trading: trades in which the buyer and the seller are one party.

The matcher's self-trade prevention (and the ``trade_no_self_trade`` constraint) stops
an account trading with itself, so the real case is two accounts of one beneficial owner
(``compliance.BeneficialOwnership``) trading with each other; trades of one account with
itself are still reported should one ever exist. Trades are grouped by party (the
beneficial owner, or the account) per market and window.

Thresholds (``settings.SURVEILLANCE``):

``WASH_MIN_TRADES``
    A party is reported when it has at least this many such trades in the window…
``WASH_MIN_NOTIONAL``
    …and their notional (price × quantity, in the quote asset) is at least this.
``WASH_HIGH_VOLUME_SHARE``
    Severity is HIGH when the party's trades make at least this fraction of the
    market's traded quantity in the window (or when an account traded with itself),
    MEDIUM otherwise.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from django.db.models import F, Q, Sum

from compliance.models import AlertKind, AlertSeverity, BeneficialOwner
from compliance.surveillance.config import SurveillanceConfig
from compliance.surveillance.findings import Finding, Window, dec, limited, trade_row
from exchange.models import Account, Market, Trade

ZERO = Decimal(0)


def detect(*, market: Market, window: Window, config: SurveillanceConfig) -> list[Finding]:
    in_window = Trade.objects.filter(
        market=market, executed_at__gte=window.start, executed_at__lt=window.end
    )
    trades = list(
        in_window.annotate(
            buyer_owner=F("buyer__beneficial_ownership__owner_id"),
            seller_owner=F("seller__beneficial_ownership__owner_id"),
        )
        .filter(
            Q(buyer_id=F("seller_id")) | Q(buyer_owner__isnull=False, buyer_owner=F("seller_owner"))
        )
        .order_by("sequence")
    )
    if not trades:
        return []
    parties: dict[str, list[Trade]] = defaultdict(list)
    for trade in trades:
        if trade.buyer_id == trade.seller_id:
            parties[f"account-{trade.buyer_id}"].append(trade)
        else:
            parties[f"owner-{trade.buyer_owner}"].append(trade)

    market_quantity = in_window.aggregate(q=Sum("quantity"))["q"] or ZERO
    owners = BeneficialOwner.objects.in_bulk(
        {int(s.removeprefix("owner-")) for s in parties if s.startswith("owner-")}
    )
    findings = []
    for subject, party_trades in sorted(parties.items()):
        notional = sum((t.quote_quantity for t in party_trades), ZERO)
        if len(party_trades) < config.wash_min_trades or notional < config.wash_min_notional:
            continue
        quantity = sum((t.quantity for t in party_trades), ZERO)
        share = quantity / market_quantity if market_quantity else ZERO
        account_ids = sorted(
            {t.buyer_id for t in party_trades} | {t.seller_id for t in party_trades}
        )
        self_trade = subject.startswith("account-")
        owner = None if self_trade else owners.get(int(subject.removeprefix("owner-")))
        high = self_trade or share >= config.wash_high_volume_share
        who = f"account #{account_ids[0]}" if self_trade else f"accounts of {owner}"
        findings.append(
            Finding(
                kind=AlertKind.WASH_TRADING,
                severity=AlertSeverity.HIGH if high else AlertSeverity.MEDIUM,
                market=market,
                window=window,
                subject=subject,
                account_id=account_ids[0],
                summary=(
                    f"{len(party_trades)} trades ({dec(quantity)} {market.symbol}, "
                    f"notional {dec(notional)}) between {who}"
                )[:255],
                evidence={
                    "detector": "wash_trading",
                    "thresholds": config.thresholds("wash_"),
                    "figures": {
                        "trade_count": len(party_trades),
                        "quantity": dec(quantity),
                        "notional": dec(notional),
                        "market_quantity": dec(market_quantity),
                        "share_of_market_quantity": dec(share.quantize(Decimal("0.0001"))),
                        "first_trade_at": trade_row(party_trades[0])["executed_at"],
                        "last_trade_at": trade_row(party_trades[-1])["executed_at"],
                    },
                    "owner": (
                        {"id": owner.pk, "name": owner.name, "reference": owner.reference}
                        if owner
                        else None
                    ),
                    "accounts": _accounts(account_ids),
                    "trades": limited([trade_row(t) for t in party_trades]),
                },
            )
        )
    return findings


def _accounts(ids: list[int]) -> list[dict]:
    return [
        {"id": pk, "wallet_address": wallet}
        for pk, wallet in Account.objects.filter(pk__in=ids)
        .order_by("pk")
        .values_list("pk", "wallet_address")
    ]
