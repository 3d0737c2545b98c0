"""Portfolio snapshots: each account's value at the end of a period, for the
performance series (``portfolio.metrics``).

A snapshot is taken for the period it names and a period holds one per account and
kind, so a retried, redelivered or repeated run writes nothing. The values are the
account's at the moment the snapshot is taken (``taken_at``; the task runs as the
period ends), marked by ``portfolio_valuation``: the same figures the trader sees.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum

from dex.db import insert_unless_taken
from exchange.models import Account, Asset
from exchange.selectors import EPOCH
from portfolio.metrics import Point
from portfolio.models import (
    TRADER_KINDS,
    PortfolioSnapshot,
    Posting,
    SnapshotKind,
    TransactionKind,
)
from portfolio.selectors import portfolio_valuation

DAY = timedelta(days=1)
# Money entering or leaving the account, as opposed to moving within it (holds, trades).
FLOW_KINDS = (TransactionKind.DEPOSIT, TransactionKind.WITHDRAWAL, TransactionKind.ADJUSTMENT)


def snapshot_period(
    *, kind: str, now: datetime, interval_seconds: int
) -> tuple[datetime, datetime]:
    """The last whole period before ``now``: of ``interval_seconds`` (aligned on the
    Unix epoch) for INTERVAL snapshots, the previous UTC day for DAILY ones."""
    step = DAY if kind == SnapshotKind.DAILY else timedelta(seconds=interval_seconds)
    end = EPOCH + ((now - EPOCH) // step) * step
    return end - step, end


def snapshot_account_ids() -> list[int]:
    """Every account that has ever had money on the venue."""
    return list(
        Account.objects.filter(ledger_accounts__kind__in=TRADER_KINDS)
        .distinct()
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _flows(account: Account, start: datetime, end: datetime) -> dict[int, Decimal]:
    rows = (
        Posting.objects.filter(
            ledger_account__owner=account,
            ledger_account__kind__in=TRADER_KINDS,
            transaction__kind__in=FLOW_KINDS,
            transaction__created_at__gte=start,
            transaction__created_at__lt=end,
        )
        .values("ledger_account__asset_id")
        .annotate(amount=Sum("amount"))
        .order_by()
    )
    return {row["ledger_account__asset_id"]: row["amount"] for row in rows}


PLACES = Decimal("0.00000001")


def _text(value: Decimal | None) -> str | None:
    """A decimal with the 8 places every amount column has."""
    return None if value is None else format(value.quantize(PLACES), "f")


@transaction.atomic(durable=True)
def portfolio_snapshot_take(
    *, account: Account, kind: str, period_start: datetime, period_end: datetime, quote: Asset
) -> bool:
    """Record ``account``'s portfolio for the period, valued in ``quote``. Returns False,
    writing nothing, when the period already has its snapshot."""
    SnapshotKind(kind)
    exists = PortfolioSnapshot.objects.filter(account=account, kind=kind, period_start=period_start)
    if exists.exists():
        return False
    valuation = portfolio_valuation(account=account)
    marks: dict[int, Decimal] = {quote.pk: Decimal(1)}
    composition = []
    total = Decimal(0)
    for line in sorted(valuation.assets, key=lambda line: line.symbol):
        in_quote = line.quote_id == quote.pk and line.mark is not None
        if in_quote:
            # Kept for the period's flows even when nothing is held now: an asset
            # deposited and sold off in the period was still brought in.
            marks[line.asset_id] = line.mark
        if line.quantity == 0:
            continue  # a closed position's line: nothing held
        if in_quote:
            total += line.value
        composition.append(
            {
                "asset": line.symbol,
                "quantity": _text(line.quantity),
                "mark": _text(line.mark) if in_quote else None,
                "value": _text(line.value) if in_quote else None,
            }
        )
    # Flows of an asset with no price are left out, as its balance is.
    flows = _flows(account, period_start, period_end)
    net_flows = sum(
        (amount * marks[asset] for asset, amount in flows.items() if asset in marks), Decimal(0)
    )
    totals = valuation.totals.get(quote.pk)
    snapshot = PortfolioSnapshot(
        account=account,
        kind=kind,
        period_start=period_start,
        period_end=period_end,
        quote=quote,
        total_value=total,
        composition=composition,
        net_flows=net_flows,
        realized_pnl=totals.realized_pnl if totals else Decimal(0),
        unrealized_pnl=totals.unrealized_pnl if totals else Decimal(0),
    )
    # A concurrent run of the same period (a redelivered message) may have written it.
    return insert_unless_taken(snapshot, constraint="portfoliosnapshot_unique_period")


def snapshot_points(*, account: Account, kind: str) -> list[Point]:
    """The account's snapshot series as ``portfolio.metrics`` points, oldest first (a
    read kept beside the writer so the two agree on what a point is)."""
    return [
        Point(float(value), float(flows))
        for value, flows in PortfolioSnapshot.objects.filter(account=account, kind=kind)
        .order_by("period_start")
        .values_list("total_value", "net_flows")
    ]
