"""Running the detectors: which windows a period covers, every detector over one market
and window, and the findings written as alerts, each raised once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction

from compliance.models import SurveillanceAlert
from compliance.surveillance import order_bursts, spoofing, unusual_activity, wash_trading
from compliance.surveillance.config import SurveillanceConfig
from compliance.surveillance.findings import Finding, Window
from exchange.models import Market, MarketStatus

Detector = Callable[..., list[Finding]]

DETECTORS: dict[str, Detector] = {
    "wash_trading": wash_trading.detect,
    "spoofing": spoofing.detect,
    "unusual_activity": unusual_activity.detect,
    "order_bursts": order_bursts.detect,
}

# Markets worth watching: every one that trades or has traded.
WATCHED_STATUSES = (MarketStatus.OPEN, MarketStatus.HALTED, MarketStatus.CLOSED)


def watched_markets():
    return Market.objects.filter(status__in=WATCHED_STATUSES).order_by("pk")


def _floor(moment: datetime, seconds: int) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def windows_between(since: datetime, until: datetime, seconds: int) -> list[Window]:
    """The epoch-aligned windows of ``seconds`` that ``[since, until)`` touches and that
    have ended by ``until``: a window still running is not scanned."""
    start = _floor(since, seconds)
    step = timedelta(seconds=seconds)
    windows = []
    while start + step <= until:
        windows.append(Window(start, start + step))
        start += step
    return windows


def last_complete_windows(now: datetime, config: SurveillanceConfig) -> list[Window]:
    """The scheduled scan's windows: the last ``catchup_windows`` that ended at least
    ``settle_seconds`` before ``now``, oldest first."""
    until = _floor(now - timedelta(seconds=config.settle_seconds), config.window_seconds)
    since = until - timedelta(seconds=config.window_seconds * config.catchup_windows)
    return windows_between(since, until, config.window_seconds)


def scan(*, market: Market, window: Window, config: SurveillanceConfig) -> list[Finding]:
    """Every detector's findings in ``market`` over ``window``."""
    findings = []
    for detect in DETECTORS.values():
        findings.extend(detect(market=market, window=window, config=config))
    return findings


def alerts_raise(findings: list[Finding]) -> list[SurveillanceAlert]:
    """An OPEN alert for each finding not raised before; returns the new ones. Call in
    a transaction: each insert runs in a savepoint, so a finding raised by a concurrent
    scan in the meantime is skipped, not an error."""
    raised = []
    for finding in findings:
        if SurveillanceAlert.objects.filter(dedupe_key=finding.dedupe_key).exists():
            continue
        try:
            with transaction.atomic():
                alert = SurveillanceAlert.objects.create(
                    kind=finding.kind,
                    severity=finding.severity,
                    market=finding.market,
                    account_id=finding.account_id,
                    summary=finding.summary[:255],
                    evidence=finding.evidence,
                    window_start=finding.window.start,
                    window_end=finding.window.end,
                    dedupe_key=finding.dedupe_key,
                )
        except IntegrityError:
            if not SurveillanceAlert.objects.filter(dedupe_key=finding.dedupe_key).exists():
                raise
            continue
        raised.append(alert)
    return raised
