"""Periodic portfolio work: snapshots of every account's portfolio.

Thin: the scheduled task fixes the period and fans out one task per account with it,
so a retried or redelivered task redoes the same period and finds it done.
"""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from dex.celery import retrying
from exchange.models import Account, Asset
from portfolio.services import snapshots


@shared_task(name="portfolio.snapshots_take")
def snapshots_take(kind: str) -> int:
    start, end = snapshots.snapshot_period(
        kind=kind, now=timezone.now(), interval_seconds=settings.PORTFOLIO_SNAPSHOT_INTERVAL
    )
    account_ids = snapshots.snapshot_account_ids()
    for account_id in account_ids:
        snapshot_take.delay(account_id, kind, start.isoformat(), end.isoformat())
    return len(account_ids)


@shared_task(name="portfolio.snapshot_take", **retrying())
def snapshot_take(account_id: int, kind: str, period_start: str, period_end: str) -> bool:
    return snapshots.portfolio_snapshot_take(
        account=Account.objects.get(pk=account_id),
        kind=kind,
        period_start=datetime.fromisoformat(period_start),
        period_end=datetime.fromisoformat(period_end),
        quote=Asset.objects.get(symbol=settings.PORTFOLIO_QUOTE_ASSET),
    )
