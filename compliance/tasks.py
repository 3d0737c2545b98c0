"""Periodic surveillance and the on-demand run, as Celery tasks.

Thin: the scheduled task fixes the windows (the last complete ones, see
``compliance.surveillance.runner.last_complete_windows``) and fans out one task per
market and window; each raises what it finds under the alert's dedupe key, so a
retried, redelivered or overlapping scan raises nothing twice.
"""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.contrib.auth import get_user_model
from django.utils import timezone

from compliance.services import alerts
from compliance.services.audit import Actor
from compliance.surveillance import runner
from compliance.surveillance.config import SurveillanceConfig
from compliance.surveillance.findings import Window
from dex.celery import retrying
from exchange.models import Market


@shared_task(name="compliance.surveillance_scan_all")
def surveillance_scan_all() -> int:
    """Fan out the scan of the last complete windows to one task per market and window."""
    windows = runner.last_complete_windows(timezone.now(), SurveillanceConfig.from_settings())
    market_ids = list(runner.watched_markets().values_list("pk", flat=True))
    for market_id in market_ids:
        for window in windows:
            surveillance_scan.delay(market_id, window.start.isoformat(), window.end.isoformat())
    return len(market_ids) * len(windows)


@shared_task(name="compliance.surveillance_scan", **retrying())
def surveillance_scan(market_id: int, window_start: str, window_end: str) -> list[int]:
    raised = alerts.surveillance_scan(
        market=Market.objects.get(pk=market_id),
        window=Window(datetime.fromisoformat(window_start), datetime.fromisoformat(window_end)),
    )
    return [alert.pk for alert in raised]


@shared_task(name="compliance.surveillance_run", **retrying())
def surveillance_run(
    user_id: int,
    ip_address: str | None,
    since: str,
    until: str,
    market_ids: list[int] | None = None,
) -> list[int]:
    """A staff member's on-demand run (from the admin), audited as theirs."""
    markets = None
    if market_ids is not None:
        markets = list(Market.objects.filter(pk__in=market_ids).order_by("pk"))
    result = alerts.surveillance_run(
        actor=Actor(user=get_user_model().objects.get(pk=user_id), ip_address=ip_address),
        since=datetime.fromisoformat(since),
        until=datetime.fromisoformat(until),
        markets=markets,
    )
    return [alert.pk for alert in result.raised]
