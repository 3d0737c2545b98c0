"""Order/cancel bursts: an account placing many orders and cancelling nearly all of them
within seconds (quote stuffing, or a runaway algorithm).

For each account, every span of ``BURST_SECONDS`` starting at one of its orders placed
in the window is examined, whole even when it runs past the window's end (so a burst
across the edge between two windows is seen by the one it starts in): the orders it
placed in the span, and of those the ones it cancelled itself (``USER_REQUEST`` or
``CANCEL_ALL``) before the span ended. The account
is reported once per window, for its busiest span with at least ``BURST_MIN_ORDERS``
orders placed and a cancel ratio (cancelled ÷ placed) of at least
``BURST_MIN_CANCEL_RATIO``. Severity is HIGH when that span holds twice the minimum or
more, MEDIUM otherwise.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from compliance.models import AlertKind, AlertSeverity
from compliance.surveillance.config import SurveillanceConfig
from compliance.surveillance.findings import (
    Finding,
    Window,
    dec,
    iso,
    limited,
    order_row,
    seconds_between,
)
from compliance.surveillance.spoofing import TRADER_CANCEL_REASONS
from exchange.models import Market, Order, OrderStatus


@dataclass(frozen=True, slots=True)
class Span:
    orders: list[Order]
    cancelled: int

    @property
    def ratio(self) -> Decimal:
        return Decimal(self.cancelled) / Decimal(len(self.orders))


def _cancelled_by_trader(order: Order) -> bool:
    return order.status == OrderStatus.CANCELLED and order.reason in TRADER_CANCEL_REASONS


def busiest_span(
    orders: list[Order], config: SurveillanceConfig, *, starting_before: datetime | None = None
) -> Span | None:
    """The span with the most orders among those that meet the thresholds, of the spans
    starting at an order placed before ``starting_before``; ``orders`` in placement
    order."""
    length = timedelta(seconds=config.burst_seconds)
    placed = [o.created_at for o in orders]
    best = None
    for first, order in enumerate(orders):
        if starting_before is not None and order.created_at >= starting_before:
            break
        end = order.created_at + length
        last = bisect_left(placed, end, lo=first)
        if last - first < config.burst_min_orders:
            continue
        span = orders[first:last]
        cancelled = sum(
            1 for o in span if _cancelled_by_trader(o) and o.done_at is not None and o.done_at < end
        )
        candidate = Span(span, cancelled)
        if candidate.ratio >= config.burst_min_cancel_ratio and (
            best is None or len(span) > len(best.orders)
        ):
            best = candidate
    return best


def detect(*, market: Market, window: Window, config: SurveillanceConfig) -> list[Finding]:
    reach = window.end + timedelta(seconds=config.burst_seconds)  # the last span's end
    orders = Order.objects.filter(
        market=market, created_at__gte=window.start, created_at__lt=reach
    ).order_by("account_id", "created_at", "id")
    by_account: dict[int, list[Order]] = defaultdict(list)
    for order in orders:
        by_account[order.account_id].append(order)

    findings = []
    for account_id, placed in sorted(by_account.items()):
        if len(placed) < config.burst_min_orders:
            continue
        span = busiest_span(placed, config, starting_before=window.end)
        if span is None:
            continue
        first, last = span.orders[0], span.orders[-1]
        findings.append(
            Finding(
                kind=AlertKind.ORDER_BURST,
                severity=AlertSeverity.HIGH
                if len(span.orders) >= 2 * config.burst_min_orders
                else AlertSeverity.MEDIUM,
                market=market,
                window=window,
                subject=f"account-{account_id}",
                account_id=account_id,
                summary=(
                    f"{len(span.orders)} orders placed and {span.cancelled} cancelled "
                    f"within {config.burst_seconds}s (cancel ratio {span.ratio:.0%})"
                ),
                evidence={
                    "detector": "order_bursts",
                    "thresholds": config.thresholds("burst_"),
                    "figures": {
                        "placed": len(span.orders),
                        "cancelled": span.cancelled,
                        "cancel_ratio": dec(span.ratio.quantize(Decimal("0.0001"))),
                        "first_placed_at": iso(first.created_at),
                        "last_placed_at": iso(last.created_at),
                        "placing_seconds": seconds_between(first.created_at, last.created_at),
                        "orders_in_window": sum(1 for o in placed if o.created_at < window.end),
                    },
                    "orders": limited([order_row(o) for o in span.orders]),
                },
            )
        )
    return findings
