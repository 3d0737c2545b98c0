"""Reads for the back office: an account's 360° picture and the venue overview."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, OuterRef, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from compliance.models import (
    ALERT_OPEN_STATUSES,
    KYC_OPEN_STATUSES,
    AccountFreeze,
    AuditEvent,
    KycCase,
    KycStatus,
    SurveillanceAlert,
)
from compliance.services.accounts import OPEN_ORDER_STATUSES
from dex.redis import redis_client
from exchange.matcher.runner import LOCK_NAMESPACE, heartbeat_key
from exchange.models import (
    LIVE_STATUSES,
    Account,
    CommandStatus,
    Market,
    Order,
    OrderCommand,
    OrderStatus,
    Side,
    Trade,
    WebSocketConnection,
)
from portfolio.models import (
    PENDING_WITHDRAWAL_STATUSES,
    Balance,
    VaultOperation,
    VaultOperationKind,
)
from portfolio.selectors import balance_list

ACCOUNT_360_ROWS = 50
# Orders resting on the book (not stops waiting for their trigger): the touch.
BOOK_STATUSES = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)
# A matcher whose oldest pending command has waited longer than this is lagging: it
# normally applies a command within milliseconds of its NOTIFY.
MATCHER_LAG = dt.timedelta(seconds=5)
# A monitoring read gives up on Redis quickly rather than hold the page.
REDIS_TIMEOUT_SECONDS = 0.5


@contextlib.contextmanager
def _one_snapshot() -> Iterator[None]:
    """Read everything in the block from one snapshot of the database, so a page's
    numbers agree with each other (a batch the matcher commits between two reads
    would otherwise show its commands done but their orders not yet, or the reverse)."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


# --------------------------------------------------------------------------------------
# An account's 360° page
# --------------------------------------------------------------------------------------


def account_open_orders(*, account: Account) -> QuerySet[Order]:
    return (
        Order.objects.filter(account=account, status__in=OPEN_ORDER_STATUSES)
        .select_related("market")
        .order_by("-created_at", "-id")
    )


def account_recent_trades(*, account: Account) -> QuerySet[Trade]:
    return (
        Trade.objects.filter(Q(buyer=account) | Q(seller=account))
        .select_related("market")
        .order_by("-executed_at", "-id")
    )


def account_audit_events(*, account: Account) -> QuerySet[AuditEvent]:
    """What staff did to the account, and to its orders (a force-cancel's record
    names the order's account)."""
    return AuditEvent.objects.filter(
        Q(target_type=Account._meta.label_lower, target_id=str(account.pk))
        | Q(target_type=Order._meta.label_lower, after__account=account.pk)
    ).select_related("actor")


@dataclass(frozen=True, slots=True)
class Account360:
    account: Account
    shown: frozenset[str]  # the sections read (ACCOUNT_360_SECTIONS); the others empty
    kyc_cases: list[KycCase]
    balances: list[Balance]
    open_orders: list[Order]
    open_order_count: int
    recent_trades: list[Trade]
    alerts: list[SurveillanceAlert]
    open_alert_count: int
    freezes: list[AccountFreeze]
    audit_events: list[AuditEvent]

    @property
    def freeze_in_force(self) -> AccountFreeze | None:
        return next((f for f in self.freezes if f.lifted_at is None), None)


# Each section of the 360° page, and the permission that lets staff read it: a role
# sees on the page what it may see in the admin's own lists, and no more.
ACCOUNT_360_SECTIONS = {
    "kyc_cases": "compliance.view_kyccase",
    "balances": "portfolio.view_balance",
    "open_orders": "exchange.view_order",
    "recent_trades": "exchange.view_trade",
    "alerts": "compliance.view_surveillancealert",
    "freezes": "compliance.view_accountfreeze",
    "audit_events": "compliance.view_auditevent",
}


def account_360(
    *,
    account: Account,
    sections: Iterable[str] = ACCOUNT_360_SECTIONS,
    rows: int = ACCOUNT_360_ROWS,
) -> Account360:
    """What the back office knows of ``account`` in ``sections`` (every one unless
    told), each list the latest ``rows``; the sections not asked for are not read."""
    shown = frozenset(sections)
    unknown = shown - set(ACCOUNT_360_SECTIONS)
    if unknown:
        raise ValueError(f"no such section of the 360° page: {sorted(unknown)}")
    alerts = SurveillanceAlert.objects.filter(account=account).select_related("market", "assignee")
    open_orders = account_open_orders(account=account)
    freezes = AccountFreeze.objects.filter(account=account).select_related("frozen_by", "lifted_by")

    def read(section: str, rows_of: Callable[[], list]) -> list:
        return rows_of() if section in shown else []

    with _one_snapshot():
        return Account360(
            account=account,
            shown=shown,
            kyc_cases=read(
                "kyc_cases",
                lambda: list(
                    KycCase.objects.filter(account=account).select_related("reviewer")[:rows]
                ),
            ),
            balances=read("balances", lambda: list(balance_list(account=account))),
            open_orders=read("open_orders", lambda: list(open_orders[:rows])),
            open_order_count=open_orders.count() if "open_orders" in shown else 0,
            recent_trades=read(
                "recent_trades", lambda: list(account_recent_trades(account=account)[:rows])
            ),
            alerts=read("alerts", lambda: list(alerts[:rows])),
            open_alert_count=(
                alerts.filter(status__in=ALERT_OPEN_STATUSES).count() if "alerts" in shown else 0
            ),
            freezes=read("freezes", lambda: list(freezes[:rows])),
            audit_events=read(
                "audit_events", lambda: list(account_audit_events(account=account)[:rows])
            ),
        )


# --------------------------------------------------------------------------------------
# The venue overview
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MatcherHealth:
    """How a market's matcher keeps up: who owns the market (the PostgreSQL session
    holding its advisory lock, and the heartbeat the owner writes to Redis), the last
    command it applied, and what waits for it."""

    lock_pid: int | None
    lock_since: dt.datetime | None
    heartbeat: dict | None
    last_sequence: int | None
    last_processed_at: dt.datetime | None
    pending: int
    oldest_pending_at: dt.datetime | None
    now: dt.datetime

    @property
    def owned(self) -> bool:
        return self.lock_pid is not None

    @property
    def oldest_pending_age(self) -> dt.timedelta | None:
        return None if self.oldest_pending_at is None else self.now - self.oldest_pending_at

    @property
    def state(self) -> str:
        if not self.owned:
            return "no matcher" if not self.pending else "no matcher, commands waiting"
        if self.pending and self.oldest_pending_age > MATCHER_LAG:
            return "lagging"
        return "ok"


@dataclass(frozen=True, slots=True)
class VenueMarket:
    market: Market
    last_price: Decimal | None
    volume_24h: Decimal
    quote_volume_24h: Decimal
    trades_24h: int
    open_orders: int
    best_bid: Decimal | None
    best_ask: Decimal | None
    matcher: MatcherHealth


@dataclass(frozen=True, slots=True)
class VenueOverview:
    now: dt.datetime
    markets: list[VenueMarket]
    open_alerts_by_kind: list[tuple[str, int]]
    kyc_queue: list[tuple[str, int]]  # (status, cases) for each open status
    kyc_awaiting_review: int  # submitted or in review: staff's to do
    pending_withdrawals: int
    pending_withdrawals_by_asset: list[tuple[str, Decimal, int]]
    celery_queue: str
    celery_queue_depth: int | None  # None: the broker did not answer
    websocket_connections_open: int

    @property
    def open_alerts(self) -> int:
        return sum(count for _, count in self.open_alerts_by_kind)


_MATCHER_LOCKS = """
SELECT l.objid, l.pid, a.backend_start
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = %s
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def matcher_locks() -> dict[int, tuple[int, dt.datetime]]:
    """Market id → (backend pid, session start) of the session holding its matcher's
    advisory lock (``exchange.matcher.runner``: class LOCK_NAMESPACE, the market's id)."""
    with connection.cursor() as cursor:
        cursor.execute(_MATCHER_LOCKS, [LOCK_NAMESPACE])
        return {int(objid): (pid, since) for objid, pid, since in cursor.fetchall()}


def matcher_heartbeats(symbols: list[str]) -> dict[str, dict]:
    """The heartbeat each owning matcher writes to Redis every second (owner
    ``host:pid``, time, journal sequence); missing when none is fresh or Redis is away."""
    if not symbols:
        return {}
    try:
        raw = redis_client().mget([heartbeat_key(s) for s in symbols])
    except redis.RedisError:
        return {}
    return {s: json.loads(value) for s, value in zip(symbols, raw, strict=True) if value}


def _broker_client() -> redis.Redis:
    """A Redis client on the Celery broker (``CELERY_BROKER_URL``, in kombu's spelling:
    ``redis+socket://<path>?virtual_host=<db>`` for a Unix socket)."""
    url = settings.CELERY_BROKER_URL
    parts = urlsplit(url)
    if parts.scheme == "redis+socket":
        db = parse_qs(parts.query).get("virtual_host", ["0"])[0]
        url = f"unix://{parts.path}?db={db}"
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )


def celery_queue_name() -> str:
    return getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")


def celery_queue_depth() -> int | None:
    """Tasks waiting in the default queue (the broker's Redis list of that name), or
    None when the broker does not answer."""
    client = _broker_client()
    try:
        return client.llen(celery_queue_name())
    except redis.RedisError:
        return None
    finally:
        client.close()


def _market_rows(now: dt.datetime) -> list[VenueMarket]:
    last_trade = Trade.objects.filter(market=OuterRef("pk")).order_by("-sequence")
    last_done = OrderCommand.objects.filter(market=OuterRef("pk"), sequence__isnull=False).order_by(
        "-sequence"
    )
    markets = list(
        Market.objects.select_related("base", "quote")
        .annotate(
            last_price=Subquery(last_trade.values("price")[:1]),
            last_sequence=Subquery(last_done.values("sequence")[:1]),
            last_processed_at=Subquery(last_done.values("processed_at")[:1]),
        )
        .order_by("symbol")
    )
    trades = {
        row["market"]: row
        for row in Trade.objects.filter(executed_at__gte=now - dt.timedelta(hours=24))
        .values("market")
        .annotate(volume=Sum("quantity"), quote_volume=Sum("quote_quantity"), count=Count("id"))
    }
    books = {
        row["market"]: row
        for row in Order.objects.filter(status__in=LIVE_STATUSES)
        .values("market")
        .annotate(
            count=Count("id"),
            best_bid=Max("price", filter=Q(side=Side.BUY, status__in=BOOK_STATUSES)),
            best_ask=Min("price", filter=Q(side=Side.SELL, status__in=BOOK_STATUSES)),
        )
    }
    pending = {
        row["market"]: row
        for row in OrderCommand.objects.filter(status=CommandStatus.PENDING)
        .values("market")
        .annotate(count=Count("id"), oldest=Min("created_at"))
    }
    locks = matcher_locks()
    beats = matcher_heartbeats([m.symbol for m in markets])
    rows = []
    for market in markets:
        traded = trades.get(market.pk, {})
        book = books.get(market.pk, {})
        waiting = pending.get(market.pk, {})
        lock_pid, lock_since = locks.get(market.pk, (None, None))
        rows.append(
            VenueMarket(
                market=market,
                last_price=market.last_price,
                volume_24h=traded.get("volume") or Decimal(0),
                quote_volume_24h=traded.get("quote_volume") or Decimal(0),
                trades_24h=traded.get("count", 0),
                open_orders=book.get("count", 0),
                best_bid=book.get("best_bid"),
                best_ask=book.get("best_ask"),
                matcher=MatcherHealth(
                    lock_pid=lock_pid,
                    lock_since=lock_since,
                    heartbeat=beats.get(market.symbol),
                    last_sequence=market.last_sequence,
                    last_processed_at=market.last_processed_at,
                    pending=waiting.get("count", 0),
                    oldest_pending_at=waiting.get("oldest"),
                    now=now,
                ),
            )
        )
    return rows


def venue_overview() -> VenueOverview:
    """The whole venue at a glance: every market's trading and its matcher's health,
    the compliance queues, withdrawals waiting, and the platform's moving parts."""
    with _one_snapshot():
        return _venue_overview()


def _venue_overview() -> VenueOverview:
    now = timezone.now()
    alert_kinds = dict(SurveillanceAlert._meta.get_field("kind").choices)
    alerts = (
        SurveillanceAlert.objects.filter(status__in=ALERT_OPEN_STATUSES)
        .values("kind")
        .annotate(count=Count("id"))
        .order_by("kind")
    )
    kyc = (
        KycCase.objects.filter(status__in=KYC_OPEN_STATUSES)
        .values("status")
        .annotate(count=Count("id"))
    )
    kyc_counts = {row["status"]: row["count"] for row in kyc}
    withdrawals = VaultOperation.objects.filter(
        kind=VaultOperationKind.WITHDRAWAL, status__in=PENDING_WITHDRAWAL_STATUSES
    )
    by_asset = (
        withdrawals.values("asset__symbol")
        .annotate(amount=Sum("amount"), count=Count("id"))
        .order_by("asset__symbol")
    )
    return VenueOverview(
        now=now,
        markets=_market_rows(now),
        open_alerts_by_kind=[(alert_kinds[row["kind"]], row["count"]) for row in alerts],
        kyc_queue=[(status.label, kyc_counts.get(status, 0)) for status in KYC_OPEN_STATUSES],
        kyc_awaiting_review=kyc_counts.get(KycStatus.SUBMITTED, 0)
        + kyc_counts.get(KycStatus.IN_REVIEW, 0),
        pending_withdrawals=sum(row["count"] for row in by_asset),
        pending_withdrawals_by_asset=[
            (row["asset__symbol"], row["amount"], row["count"]) for row in by_asset
        ],
        celery_queue=celery_queue_name(),
        celery_queue_depth=celery_queue_depth(),
        websocket_connections_open=WebSocketConnection.objects.filter(
            disconnected_at__isnull=True
        ).count(),
    )
