"""Spoofing and layering: large orders placed and cancelled within seconds, (nearly)
unfilled — liquidity shown to move the price and never meant to trade.

An order of the window is a *spoof candidate* when it is a limit order cancelled by its
trader (``USER_REQUEST`` or ``CANCEL_ALL``; orders that end unfilled because they were
IOC or found no liquidity are not), its quantity is at least ``SPOOF_SIZE_MULTIPLE``
times the market's (lower) median limit-order quantity over the last
``SPOOF_BASELINE_SECONDS`` (measured to the window's end, from at least
``SPOOF_MIN_BASELINE_ORDERS`` orders — with fewer, the market has no typical size yet and
nothing is reported), it lived at most ``SPOOF_CANCEL_SECONDS`` from placement
(``created_at``) to cancellation (``done_at``, the matcher's clock), and it filled at
most ``SPOOF_MAX_FILL_RATIO`` of its quantity.

Candidates are grouped by account and side. A group is reported when it has at least
``SPOOF_LAYER_ORDERS`` orders (layering: several large orders on one side), or when the
account traded on the *other* side while they rested (the trade the spoof was there to
get). Severity is HIGH with both, MEDIUM with either. The evidence gives each order's
price and its distance from the last trade before it was placed (how near the touch it
was shown), its lifetime, and the opposite-side trades.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from django.db.models import Aggregate, Count, DecimalField, F, Q

from compliance.models import AlertKind, AlertSeverity
from compliance.surveillance.config import SurveillanceConfig
from compliance.surveillance.findings import (
    Finding,
    Window,
    dec,
    iso,
    limited,
    order_row,
    trade_row,
)
from exchange.models import Market, Order, OrderStatus, OrderType, Side, Trade

# Cancellations the trader asked for (the engine's Reason codes).
TRADER_CANCEL_REASONS = ("USER_REQUEST", "CANCEL_ALL")


class Median(Aggregate):
    """The lower median: an actual value of the column, exact (``percentile_cont``
    would interpolate in floating point)."""

    function = "percentile_disc"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = DecimalField()


def typical_quantity(*, market: Market, window: Window, config: SurveillanceConfig):
    """The median limit-order quantity over the baseline before the window's end, and
    how many orders it was measured on."""
    since = window.end - timedelta(seconds=config.spoof_baseline_seconds)
    row = Order.objects.filter(
        market=market,
        type=OrderType.LIMIT,
        created_at__gte=min(since, window.start),
        created_at__lt=window.end,
    ).aggregate(median=Median("quantity"), count=Count("id"))
    return row["median"], row["count"]


def detect(*, market: Market, window: Window, config: SurveillanceConfig) -> list[Finding]:
    median, sample = typical_quantity(market=market, window=window, config=config)
    if median is None or sample < config.spoof_min_baseline_orders:
        return []
    large = median * config.spoof_size_multiple
    candidates = list(
        Order.objects.filter(
            market=market,
            type=OrderType.LIMIT,
            created_at__gte=window.start,
            created_at__lt=window.end,
            status=OrderStatus.CANCELLED,
            reason__in=TRADER_CANCEL_REASONS,
            quantity__gte=large,
            done_at__lte=F("created_at") + timedelta(seconds=config.spoof_cancel_seconds),
            filled__lte=F("quantity") * config.spoof_max_fill_ratio,
        ).order_by("created_at", "id")
    )
    groups: dict[tuple[int, str], list[Order]] = defaultdict(list)
    for order in candidates:
        groups[(order.account_id, order.side)].append(order)

    findings = []
    for (account_id, side), orders in sorted(groups.items()):
        rested_from = orders[0].created_at
        rested_to = max(o.done_at for o in orders)
        other_side = Q(seller_id=account_id) if side == Side.BUY else Q(buyer_id=account_id)
        opposite = list(
            Trade.objects.filter(
                other_side,
                market=market,
                executed_at__gte=rested_from,
                executed_at__lte=rested_to,
            ).order_by("sequence")
        )
        layered = len(orders) >= config.spoof_layer_orders
        if not layered and not opposite:
            continue
        levels = sorted({o.price for o in orders}, reverse=side == Side.BUY)
        quantity = sum((o.quantity for o in orders), Decimal(0))
        pattern = "layering" if layered and len(levels) > 1 else "spoofing"
        findings.append(
            Finding(
                kind=AlertKind.SPOOFING,
                severity=AlertSeverity.HIGH if layered and opposite else AlertSeverity.MEDIUM,
                market=market,
                window=window,
                subject=f"account-{account_id}-{side.lower()}",
                account_id=account_id,
                summary=(
                    f"{pattern}: {len(orders)} large {side} orders ({dec(quantity)}, "
                    f"≥ {dec(config.spoof_size_multiple)}× the median {dec(median)}) "
                    f"cancelled within {config.spoof_cancel_seconds}s"
                    + (f"; {len(opposite)} trades on the other side" if opposite else "")
                )[:255],
                evidence={
                    "detector": "spoofing",
                    "thresholds": config.thresholds("spoof_"),
                    "figures": {
                        "pattern": pattern,
                        "side": side,
                        "order_count": len(orders),
                        "price_levels": [dec(p) for p in levels],
                        "quantity": dec(quantity),
                        "median_quantity": dec(median),
                        "median_sample": sample,
                        "large_from_quantity": dec(large),
                        "first_placed_at": iso(rested_from),
                        "last_cancelled_at": iso(rested_to),
                        "opposite_trade_count": len(opposite),
                        "opposite_trade_quantity": dec(
                            sum((t.quantity for t in opposite), Decimal(0))
                        ),
                    },
                    "orders": limited([_with_touch(market, o) for o in orders]),
                    "trades": limited([trade_row(t) for t in opposite]),
                },
            )
        )
    return findings


def _with_touch(market: Market, order: Order) -> dict:
    """The order as evidence, with the last trade price before it was placed and its
    distance from it in basis points (positive: away from the other side)."""
    row = order_row(order)
    last = (
        Trade.objects.filter(market=market, executed_at__lt=order.created_at)
        .order_by("-executed_at", "-sequence")
        .values_list("price", flat=True)
        .first()
    )
    row["last_trade_price"] = dec(last)
    if last:
        away = (last - order.price) if order.side == Side.BUY else (order.price - last)
        row["distance_bps"] = dec((away / last * 10_000).quantize(Decimal("0.1")))
    else:
        row["distance_bps"] = None
    return row
