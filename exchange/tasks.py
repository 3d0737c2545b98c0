"""Periodic market-data work: order-book snapshots, candles, archiving finished orders.

Thin: each task parses its arguments, loads by id and calls a service. The scheduled
task of each kind fixes the period and fans out one task per market with it, so a
retried or redelivered task redoes the same period and finds it done.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from dex.celery import retrying
from exchange.models import CandleInterval, Market, MarketStatus
from exchange.selectors import closed_market_ids_unrolled
from exchange.services import archiving, market_data

# Markets whose books and trades are worth recording: every one that may trade.
RECORDED_STATUSES = (MarketStatus.OPEN, MarketStatus.HALTED)


def _recorded_market_ids() -> list[int]:
    return list(
        Market.objects.filter(status__in=RECORDED_STATUSES)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


@shared_task(name="exchange.orderbook_snapshots_take")
def orderbook_snapshots_take() -> int:
    """Fan out this period's snapshot to one task per market."""
    taken_at = market_data.period_start(timezone.now(), settings.ORDERBOOK_SNAPSHOT_INTERVAL)
    market_ids = _recorded_market_ids()
    for market_id in market_ids:
        orderbook_snapshot_take.delay(market_id, taken_at.isoformat())
    return len(market_ids)


@shared_task(name="exchange.orderbook_snapshot_take", **retrying())
def orderbook_snapshot_take(market_id: int, taken_at: str) -> bool:
    market = Market.objects.get(pk=market_id)
    return market_data.orderbook_snapshot_take(
        market=market,
        taken_at=datetime.fromisoformat(taken_at),
        levels=settings.ORDERBOOK_SNAPSHOT_LEVELS,
    )


@shared_task(name="exchange.candles_roll_all")
def candles_roll_all() -> int:
    market_ids = _recorded_market_ids() + closed_market_ids_unrolled()
    for market_id in market_ids:
        for interval in CandleInterval.values:
            candles_roll.delay(market_id, interval)
    return len(market_ids)


@shared_task(name="exchange.candles_roll", **retrying())
def candles_roll(market_id: int, interval: str) -> int:
    market = Market.objects.get(pk=market_id)
    return market_data.candles_roll(
        market=market,
        interval=interval,
        settle=timedelta(seconds=settings.CANDLE_SETTLE_SECONDS),
    )


@shared_task(name="exchange.orders_archive", **retrying())
def orders_archive() -> int:
    """Move orders finished more than ``ORDER_ARCHIVE_AFTER_DAYS`` ago to the archive, a
    batch (one transaction) at a time, until none are left. A rerun finds none."""
    done_before = timezone.now() - timedelta(days=settings.ORDER_ARCHIVE_AFTER_DAYS)
    total = 0
    while archived := archiving.orders_archive(
        done_before=done_before, limit=settings.ORDER_ARCHIVE_BATCH
    ):
        total += archived
    return total
