"""The compliance reports: trades, orders, an account's statement and the surveillance
summary, for a period.

Each CSV report is a generator of rows (lists of strings, the header first) read from a
server-side cursor (``QuerySet.iterator(chunk_size=…)``), so an export of millions of
rows holds one chunk in memory at a time, whether it is streamed to a browser by the
admin or written to a file by ``manage.py compliance_report``. (Outside a transaction
Django declares the cursor ``WITH HOLD``: PostgreSQL then keeps the rows on its side
until they are fetched, never the process.) Every value is text
that means exactly one thing: decimals exactly as stored (``format(d, "f")``),
timestamps ISO 8601 in UTC with a ``Z``, empty for none.

A period is half-open, ``[start, end)``: consecutive periods never count a row twice.

What each report takes is checked by its form (``TradeReportForm`` …), shared by the
admin and the command, and described by a :class:`ReportSpec` in :data:`REPORTS`.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django import forms
from django.db.models import (
    Aggregate,
    Avg,
    CharField,
    Count,
    DurationField,
    F,
    Max,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce

from compliance.models import ALERT_OPEN_STATUSES, AlertSeverity, SurveillanceAlert
from dex.db import ADDRESS_REGEX, ZERO, AmountField
from exchange.models import Account, Market, Order, OrderArchive, Side, Trade
from portfolio.models import TRADER_KINDS, LedgerAccountKind, Posting

# Rows fetched from the database per round trip: large enough that the round trips cost
# little, small enough that a chunk's rows are a few megabytes at most.
CHUNK_SIZE = 2000
# Accounts listed in the surveillance summary's "top accounts".
TOP_ACCOUNTS = 10

Row = list[str]
# The largest id a BIGINT column holds: a larger number names no account.
MAX_ID = 2**63 - 1


# --------------------------------------------------------------------------------------
# Values as text
# --------------------------------------------------------------------------------------


# A cell starting with one of these is a formula to a spreadsheet: a trader's client
# order id "=HYPERLINK(…)" would run in the auditor's copy of the report.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text(value: Any) -> str:
    """A value as exact text: decimals as stored, datetimes in UTC, durations in
    seconds, nothing as an empty cell. Text that a spreadsheet would take for a formula
    is quoted with a leading ``'`` (numbers are not text: a negative amount stays one)."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if isinstance(value, dt.timedelta):
        seconds = Decimal(value.days * 86400 + value.seconds) + Decimal(value.microseconds) / 10**6
        return format(seconds, "f")
    if isinstance(value, int | float):
        return str(value)
    value = str(value)
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _row(values: Iterable[Any]) -> Row:
    return [text(value) for value in values]


class _Line:
    """A write-only file whose ``write`` returns the line written, so ``csv.writer``
    can format one row at a time without a buffer."""

    def write(self, line: str) -> str:
        return line


def csv_lines(rows: Iterable[Row]) -> Iterator[str]:
    """``rows`` as CSV lines (RFC 4180 quoting, CRLF line ends), one at a time."""
    writer = csv.writer(_Line())
    for row in rows:
        yield writer.writerow(row)


def csv_chunks(rows: Iterable[Row], *, lines_per_chunk: int = 500) -> Iterator[bytes]:
    """``rows`` as UTF-8 CSV in chunks of ``lines_per_chunk`` lines: what a streaming
    response sends (one write per line would cost more than the line)."""
    batch: list[str] = []
    for line in csv_lines(rows):
        batch.append(line)
        if len(batch) >= lines_per_chunk:
            yield "".join(batch).encode()
            batch.clear()
    if batch:
        yield "".join(batch).encode()


# --------------------------------------------------------------------------------------
# Periods
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """``[start, end)`` in UTC."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a report period needs timezone-aware datetimes")
        if self.end <= self.start:
            raise ValueError("a report period must end after it starts")

    def slug(self) -> str:
        """The period for a file name: ``20261101T000000Z_20261201T000000Z``."""
        return "_".join(
            moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            for moment in (self.start, self.end)
        )


# --------------------------------------------------------------------------------------
# Trades
# --------------------------------------------------------------------------------------

TRADE_HEADER = [
    "trade_id",
    "executed_at",
    "market",
    "sequence",
    "price",
    "quantity",
    "notional",
    "fee_asset",
    "aggressor_side",
    "maker_order_id",
    "maker_account",
    "maker_side",
    "maker_fee",
    "taker_order_id",
    "taker_account",
    "taker_side",
    "taker_fee",
    "settlement_status",
    "settled_at",
]


def trade_report(
    *, period: Period, market: Market | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[Row]:
    """Every trade executed in ``period`` (in ``market``, or in every market), oldest
    first: its price, size and notional, both parties (order and wallet, side, fee in
    the market's quote asset; a negative maker fee is a rebate) and its settlement."""
    trades = Trade.objects.filter(executed_at__gte=period.start, executed_at__lt=period.end)
    if market is not None:
        trades = trades.filter(market=market)
    rows = trades.order_by("executed_at", "id").values_list(
        "id",
        "executed_at",
        "market__symbol",
        "sequence",
        "price",
        "quantity",
        "quote_quantity",
        "market__quote__symbol",
        "aggressor_side",
        "maker_order_id",
        "maker_fee",
        "taker_order_id",
        "taker_fee",
        # The parties from the trade itself: its orders may be archived by now.
        "buyer__wallet_address",
        "seller__wallet_address",
        "settlement_status",
        "settled_at",
    )
    yield TRADE_HEADER
    for (
        trade_id,
        executed_at,
        symbol,
        sequence,
        price,
        quantity,
        notional,
        fee_asset,
        aggressor,
        maker_order,
        maker_fee,
        taker_order,
        taker_fee,
        buyer,
        seller,
        settlement,
        settled_at,
    ) in rows.iterator(chunk_size=chunk_size):
        maker_side = Side.SELL if aggressor == Side.BUY else Side.BUY
        taker, maker = (buyer, seller) if aggressor == Side.BUY else (seller, buyer)
        yield _row(
            (
                trade_id,
                executed_at,
                symbol,
                sequence,
                price,
                quantity,
                notional,
                fee_asset,
                aggressor,
                maker_order,
                maker,
                maker_side,
                maker_fee,
                taker_order,
                taker,
                aggressor,
                taker_fee,
                settlement,
                settled_at,
            )
        )


# --------------------------------------------------------------------------------------
# Orders
# --------------------------------------------------------------------------------------

# The order report's columns, each the name of an ``Order`` (and ``OrderArchive``) column
# or of a value both queries annotate.
_ORDER_COLUMNS = [
    "order_id",
    "created_at",
    "market_symbol",
    "wallet",
    "client_order_id",
    "side",
    "type",
    "time_in_force",
    "post_only",
    "price",
    "stop_price",
    "quantity",
    "quote_quantity",
    "filled",
    "filled_quote",
    "average_price",
    "maker_fee_rate",
    "taker_fee_rate",
    "status",
    "reason",
    "accepted_at",
    "done_at",
    "source",
]
ORDER_HEADER = [
    "order_id",
    "created_at",
    "market",
    "account",
    *_ORDER_COLUMNS[4:],
]


def order_report(*, period: Period, market: Market, chunk_size: int = CHUNK_SIZE) -> Iterator[Row]:
    """Every order placed in ``market`` during ``period`` (by ``created_at``), oldest
    first, each exactly once: from the live order table or, for one that finished long
    ago and was moved (``exchange.services.archiving``), from the archive (``source``
    says which). Archiving moves a row in one transaction, so no order is in both."""
    in_period = Q(created_at__gte=period.start, created_at__lt=period.end)
    live = (
        Order.objects.filter(in_period, market=market)
        .annotate(
            order_id=F("id"),
            market_symbol=F("market__symbol"),
            wallet=F("account__wallet_address"),
            source=Value("live", output_field=CharField()),
        )
        .values(*_ORDER_COLUMNS)
    )
    archived = (
        OrderArchive.objects.filter(in_period, market_id=market.pk)
        .annotate(
            market_symbol=Value(market.symbol, output_field=CharField()),
            wallet=Subquery(
                Account.objects.filter(pk=OuterRef("account_id")).values("wallet_address")
            ),
            source=Value("archive", output_field=CharField()),
        )
        .values(*_ORDER_COLUMNS)
    )
    rows = live.union(archived, all=True).order_by("created_at", "order_id")
    yield ORDER_HEADER
    for order in rows.iterator(chunk_size=chunk_size):
        yield _row(order[column] for column in _ORDER_COLUMNS)


# --------------------------------------------------------------------------------------
# Account statement
# --------------------------------------------------------------------------------------

STATEMENT_HEADER = [
    "line",
    "time",
    "asset",
    "transaction_id",
    "kind",
    "reference",
    "description",
    "available_change",
    "held_change",
    "change",
    "fee",
    "available",
    "held",
    "balance",
]


@dataclass(slots=True)
class _Running:
    available: Decimal = ZERO
    held: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return self.available + self.held


def _trader_postings(account: Account):
    return Posting.objects.filter(
        ledger_account__owner=account, ledger_account__kind__in=TRADER_KINDS
    )


def _sum_of(kind: str) -> Coalesce:
    return Coalesce(
        Sum("amount", filter=Q(ledger_account__kind=kind)), Value(ZERO), output_field=AmountField()
    )


def _reference(trade_id, order_id, vault_operation_id, adjustment_id) -> str:
    for name, pk in (
        ("trade", trade_id),
        ("vault_operation", vault_operation_id),
        ("adjustment", adjustment_id),
        ("order", order_id),
    ):
        if pk is not None:
            return f"{name}:{pk}"
    return ""


def _fee_paid(account_id: int, buyer_id, aggressor, maker_fee, taker_fee) -> Decimal:
    """The fee ``account_id`` paid in a trade: the taker's if it was the aggressor."""
    account_side = Side.BUY if buyer_id == account_id else Side.SELL
    return taker_fee if aggressor == account_side else maker_fee


def account_statement(
    *, account: Account, period: Period, chunk_size: int = CHUNK_SIZE
) -> Iterator[Row]:
    """The account's statement for ``period``, per asset (by symbol): its ``OPENING``
    balance, one ``ENTRY`` per ledger transaction that moved its funds (deposits,
    withdrawals and their holds, order holds and releases, trades, fees, adjustments)
    with the running balance after it, and its ``CLOSING`` balance, which is the ledger's
    balance at the end of the period.

    Balances are split as the ledger keeps them: ``available``, ``held`` (reserved for
    open orders and pending withdrawals) and ``balance``, their sum. A hold moves funds
    from available to held and leaves the balance alone. On a trade's quote-asset entry
    ``fee`` is the fee the account paid in it, already counted in the change (negative
    for a maker rebate).
    """
    postings = _trader_postings(account)
    opening = {
        row["ledger_account__asset__symbol"]: _Running(row["available"], row["held"])
        for row in postings.filter(created_at__lt=period.start)
        .values("ledger_account__asset__symbol")
        .annotate(
            available=_sum_of(LedgerAccountKind.AVAILABLE),
            held=_sum_of(LedgerAccountKind.HELD),
        )
        .order_by()
    }
    in_period = postings.filter(created_at__gte=period.start, created_at__lt=period.end)
    moved = set(
        in_period.values_list("ledger_account__asset__symbol", flat=True).distinct().order_by()
    )
    yield STATEMENT_HEADER
    for symbol in sorted(moved | {s for s, r in opening.items() if r.available or r.held}):
        running = opening.get(symbol, _Running())
        yield _balance_line("OPENING", period.start, symbol, running)
        if symbol in moved:
            yield from _statement_entries(account, in_period, symbol, running, chunk_size)
        yield _balance_line("CLOSING", period.end, symbol, running)


def _balance_line(line: str, moment: dt.datetime, symbol: str, running: _Running) -> Row:
    return _row((line, moment, symbol, *[""] * 8, running.available, running.held, running.total))


def _statement_entries(
    account: Account, postings, symbol: str, running: _Running, chunk_size: int
) -> Iterator[Row]:
    """The entries of ``symbol``, oldest first, moving ``running`` as they go."""
    entries = (
        postings.filter(ledger_account__asset__symbol=symbol)
        .values(
            "created_at",
            "transaction_id",
            "transaction__kind",
            "transaction__description",
            "transaction__trade_id",
            "transaction__order_id",
            "transaction__vault_operation_id",
            "transaction__adjustment_id",
            "transaction__trade__market__quote__symbol",
            "transaction__trade__buyer_id",
            "transaction__trade__aggressor_side",
            "transaction__trade__maker_fee",
            "transaction__trade__taker_fee",
        )
        .annotate(
            available=_sum_of(LedgerAccountKind.AVAILABLE),
            held=_sum_of(LedgerAccountKind.HELD),
        )
        .order_by("created_at", "transaction_id")
    )
    for entry in entries.iterator(chunk_size=chunk_size):
        running.available += entry["available"]
        running.held += entry["held"]
        fee = None
        if entry["transaction__trade__market__quote__symbol"] == symbol:
            fee = _fee_paid(
                account.pk,
                entry["transaction__trade__buyer_id"],
                entry["transaction__trade__aggressor_side"],
                entry["transaction__trade__maker_fee"],
                entry["transaction__trade__taker_fee"],
            )
        yield _row(
            (
                "ENTRY",
                entry["created_at"],
                symbol,
                entry["transaction_id"],
                entry["transaction__kind"],
                _reference(
                    entry["transaction__trade_id"],
                    entry["transaction__order_id"],
                    entry["transaction__vault_operation_id"],
                    entry["transaction__adjustment_id"],
                ),
                entry["transaction__description"],
                entry["available"],
                entry["held"],
                entry["available"] + entry["held"],
                fee,
                running.available,
                running.held,
                running.total,
            )
        )


# --------------------------------------------------------------------------------------
# Surveillance summary
# --------------------------------------------------------------------------------------


class _Median(Aggregate):
    function = "percentile_cont"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"


_TIME_TO_CLOSE = F("closed_at") - F("created_at")


def _close_times() -> dict[str, Aggregate]:
    return {
        "closed": Count("id", filter=Q(closed_at__isnull=False)),
        "mean_to_close": Avg(_TIME_TO_CLOSE, output_field=DurationField()),
        "median_to_close": _Median(_TIME_TO_CLOSE, output_field=DurationField()),
        "max_to_close": Max(_TIME_TO_CLOSE, output_field=DurationField()),
    }


def _counts() -> dict[str, Aggregate]:
    return {
        "alerts": Count("id"),
        "open": Count("id", filter=Q(status__in=ALERT_OPEN_STATUSES)),
        "high": Count("id", filter=Q(severity=AlertSeverity.HIGH)),
    }


@dataclass(frozen=True, slots=True)
class SurveillanceSummary:
    """The alerts raised in ``period`` as they stand now. Each list holds dicts with the
    grouping keys and the counts: ``alerts``, ``open`` (open or escalated), ``high``
    (high severity), and where shown ``closed`` with the time from raising to closing
    (``mean_to_close``, ``median_to_close``, ``max_to_close``; closed alerts only)."""

    period: Period
    total: dict[str, Any]
    by_kind_severity_status: list[dict[str, Any]]
    by_kind: list[dict[str, Any]]
    by_market: list[dict[str, Any]]
    top_accounts: list[dict[str, Any]] = field(default_factory=list)


def surveillance_summary(*, period: Period, top: int = TOP_ACCOUNTS) -> SurveillanceSummary:
    """Alerts raised in ``period``: by kind, severity and status; per kind with the time
    to close; per market; and the ``top`` accounts by alerts (then by high-severity
    alerts). A handful of grouped queries: the result is as small as the number of
    kinds, markets and accounts named, whatever the number of alerts."""
    alerts = SurveillanceAlert.objects.filter(
        created_at__gte=period.start, created_at__lt=period.end
    ).order_by()
    return SurveillanceSummary(
        period=period,
        total=alerts.aggregate(**_counts(), **_close_times()),
        by_kind_severity_status=list(
            alerts.values("kind", "severity", "status")
            .annotate(alerts=Count("id"))
            .order_by("kind", "severity", "status")
        ),
        by_kind=list(
            alerts.values("kind").annotate(**_counts(), **_close_times()).order_by("kind")
        ),
        by_market=list(
            alerts.values(market_symbol=Coalesce("market__symbol", Value("")))
            .annotate(**_counts(), **_close_times())
            .order_by("market_symbol")
        ),
        top_accounts=list(
            alerts.filter(account__isnull=False)
            .values("account_id", wallet=F("account__wallet_address"))
            .annotate(**_counts())
            .order_by("-alerts", "-high", "wallet")[:top]
        ),
    )


SURVEILLANCE_HEADER = [
    "section",
    "kind",
    "severity",
    "status",
    "market",
    "account",
    "alerts",
    "open",
    "high",
    "closed",
    "mean_seconds_to_close",
    "median_seconds_to_close",
    "max_seconds_to_close",
]


def surveillance_summary_rows(summary: SurveillanceSummary) -> Iterator[Row]:
    """The summary as one table: a ``section`` column says which grouping a row is
    (``total``, ``kind_severity_status``, ``kind``, ``market``, ``top_account``), and
    the columns a grouping does not use are empty."""

    def line(section: str, group: dict[str, Any], **keys: Any) -> Row:
        return _row(
            (
                section,
                keys.get("kind"),
                keys.get("severity"),
                keys.get("status"),
                keys.get("market"),
                keys.get("account"),
                *(
                    group.get(name)
                    for name in (
                        "alerts",
                        "open",
                        "high",
                        "closed",
                        "mean_to_close",
                        "median_to_close",
                        "max_to_close",
                    )
                ),
            )
        )

    yield SURVEILLANCE_HEADER
    yield line("total", summary.total)
    for group in summary.by_kind_severity_status:
        yield line(
            "kind_severity_status",
            group,
            kind=group["kind"],
            severity=group["severity"],
            status=group["status"],
        )
    for group in summary.by_kind:
        yield line("kind", group, kind=group["kind"])
    for group in summary.by_market:
        yield line("market", group, market=group["market_symbol"] or "(none)")
    for group in summary.top_accounts:
        yield line("top_account", group, account=group["wallet"])


# --------------------------------------------------------------------------------------
# What each report takes
# --------------------------------------------------------------------------------------


class ReportForm(forms.Form):
    """A period, ``start`` inclusive and ``end`` exclusive, in UTC. A date alone means
    its midnight."""

    start = forms.DateTimeField(
        label="From", help_text="UTC, inclusive: 2026-11-01 or 2026-11-01T09:30"
    )
    end = forms.DateTimeField(label="To", help_text="UTC, exclusive")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start is not None and end is not None:
            if end <= start:
                raise forms.ValidationError("The period must end after it starts.")
            data["period"] = Period(start=start, end=end)
        return data

    def parameters(self) -> dict[str, Any]:
        """The cleaned parameters as JSON-safe values, for the export's audit record."""
        data = self.cleaned_data
        values: dict[str, Any] = {"start": text(data["start"]), "end": text(data["end"])}
        if "market" in self.fields:
            values["market"] = data["market"].symbol if data.get("market") else None
        if "account" in self.fields:
            values["account"] = data["account"].wallet_address if data.get("account") else None
        return values


class _MarketField(forms.ModelChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            queryset=Market.objects.order_by("symbol"),
            to_field_name="symbol",
            error_messages={"invalid_choice": "No market with that symbol."},
            **kwargs,
        )

    def label_from_instance(self, market: Market) -> str:
        return market.symbol


class AccountField(forms.CharField):
    """An account by wallet address (``0x…``, any case) or by id."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=42, help_text="Wallet address (0x…) or account id", **kwargs)

    def clean(self, value: Any) -> Account | None:
        value = super().clean(value).strip()
        if not value:
            return None
        if re.fullmatch(ADDRESS_REGEX, value.lower()):
            lookup = {"wallet_address": value.lower()}
        elif value.isascii() and value.isdigit() and int(value) <= MAX_ID:
            lookup = {"pk": int(value)}
        else:
            raise forms.ValidationError("Give a wallet address (0x and 40 hex digits) or an id.")
        account = Account.objects.filter(**lookup).first()
        if account is None:
            raise forms.ValidationError(f"No account {value}.")
        return account


class TradeReportForm(ReportForm):
    market = _MarketField(required=False, empty_label="All markets")


class OrderReportForm(ReportForm):
    market = _MarketField(empty_label="Choose a market")


class StatementForm(ReportForm):
    account = AccountField()


class SurveillanceSummaryForm(ReportForm):
    pass


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """One report: what it is called, the form of its parameters, and its rows and
    file name from the form's cleaned data."""

    name: str
    title: str
    form: type[ReportForm]
    rows: Callable[[dict[str, Any]], Iterator[Row]]
    filename: Callable[[dict[str, Any]], str]


def _subject(data: dict[str, Any]) -> str:
    if data.get("account") is not None:
        return data["account"].wallet_address
    if data.get("market") is not None:
        return data["market"].symbol
    return "all"


REPORTS: dict[str, ReportSpec] = {
    spec.name: spec
    for spec in (
        ReportSpec(
            name="trades",
            title="Trade report",
            form=TradeReportForm,
            rows=lambda d: trade_report(period=d["period"], market=d.get("market")),
            filename=lambda d: f"trades_{_subject(d)}_{d['period'].slug()}.csv",
        ),
        ReportSpec(
            name="orders",
            title="Order report",
            form=OrderReportForm,
            rows=lambda d: order_report(period=d["period"], market=d["market"]),
            filename=lambda d: f"orders_{_subject(d)}_{d['period'].slug()}.csv",
        ),
        ReportSpec(
            name="statement",
            title="Account statement",
            form=StatementForm,
            rows=lambda d: account_statement(account=d["account"], period=d["period"]),
            filename=lambda d: f"statement_{_subject(d)}_{d['period'].slug()}.csv",
        ),
        ReportSpec(
            name="surveillance",
            title="Surveillance summary",
            form=SurveillanceSummaryForm,
            rows=lambda d: surveillance_summary_rows(surveillance_summary(period=d["period"])),
            filename=lambda d: f"surveillance_{d['period'].slug()}.csv",
        ),
    )
}
