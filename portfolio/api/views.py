"""The trader's money: balances, ledger history, deposits and withdrawals; and how the
trader is doing: positions, P&L, portfolio snapshots and their metrics, trading
statistics, and CSV exports of the fills and of the realized gains."""

from __future__ import annotations

import csv
from decimal import Decimal
from io import StringIO

from django.db.models import Sum
from django.http import HttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response

from dex.api.errors import ApiError
from dex.api.fields import amount_field
from dex.api.permissions import CanWithdraw
from dex.api.scoping import for_account
from dex.api.views import TraderHistoryView, TraderView
from exchange.api.serializers import FillSerializer
from exchange.models import Asset, Market, Trade
from exchange.services.accounts import InvalidWalletAddress
from portfolio.api.serializers import (
    DayRangeQuerySerializer,
    GainsQuerySerializer,
    PnlSummarySerializer,
    PortfolioMetricsSerializer,
    PortfolioSnapshotSerializer,
    PositionValuationSerializer,
    SnapshotKindQuerySerializer,
    SnapshotQuerySerializer,
    StatsQuerySerializer,
    TimeRangeQuerySerializer,
    TradingStatsSerializer,
    TradingWindowsSerializer,
)
from portfolio.models import (
    Balance,
    PortfolioSnapshot,
    Position,
    Posting,
    TradingStats,
    VaultOperation,
    VaultOperationKind,
)
from portfolio.reports import gains_report_csv
from portfolio.selectors import (
    market_last_prices,
    portfolio_metrics,
    portfolio_valuation,
    user_trading_statistics,
)
from portfolio.services.ledger import InsufficientFunds
from portfolio.services.vault import (
    ComplianceRefusal,
    IdempotencyConflict,
    InvalidAmount,
    VaultError,
    withdrawal_requested,
)


class BalanceSerializer(serializers.ModelSerializer):
    asset = serializers.CharField(source="asset.symbol")

    class Meta:
        model = Balance
        fields = ["asset", "available", "held", "total"]
        read_only_fields = fields


class PostingSerializer(serializers.ModelSerializer):
    asset = serializers.CharField(source="ledger_account.asset.symbol")
    bucket = serializers.CharField(source="ledger_account.kind", help_text="AVAILABLE or HELD")
    kind = serializers.CharField(source="transaction.kind")
    description = serializers.CharField(source="transaction.description")
    trade_id = serializers.IntegerField(source="transaction.trade_id", allow_null=True)
    vault_operation_id = serializers.IntegerField(
        source="transaction.vault_operation_id", allow_null=True
    )

    class Meta:
        model = Posting
        fields = [
            "id",
            "asset",
            "bucket",
            "amount",
            "kind",
            "description",
            "order_id",
            "trade_id",
            "vault_operation_id",
            "created_at",
        ]
        read_only_fields = fields


class VaultOperationSerializer(serializers.ModelSerializer):
    asset = serializers.CharField(source="asset.symbol")

    class Meta:
        model = VaultOperation
        fields = [
            "id",
            "kind",
            "status",
            "asset",
            "amount",
            "destination_address",
            "tx_hash",
            "log_index",
            "block_number",
            "reason",
            "created_at",
            "completed_at",
        ]
        read_only_fields = fields


class WithdrawalRequestSerializer(serializers.Serializer):
    asset = serializers.CharField(max_length=12)
    amount = amount_field()
    destination_address = serializers.RegexField(r"^0x[0-9a-fA-F]{40}$")
    client_request_id = serializers.RegexField(
        r"^[A-Za-z0-9_.:-]{1,64}$",
        help_text="Your id for this request: a retry with the same id returns the original.",
    )


class LedgerQuerySerializer(serializers.Serializer):
    asset = serializers.CharField(max_length=12, required=False)


class BalanceListView(TraderView):
    @extend_schema(operation_id="balances_list", responses=BalanceSerializer(many=True))
    def get(self, request):
        balances = for_account(Balance.objects.select_related("asset"), self.trader.account)
        return Response(BalanceSerializer(balances.order_by("asset__symbol"), many=True).data)


class LedgerListView(TraderHistoryView):
    serializer_class = PostingSerializer

    @extend_schema(
        operation_id="ledger_list",
        parameters=[LedgerQuerySerializer],
        responses=PostingSerializer(many=True),
        summary="Every movement of your funds, newest first (cursor pagination)",
    )
    def get(self, request):
        params = self.query_params(LedgerQuerySerializer)
        postings = for_account(
            Posting.objects.select_related("transaction", "ledger_account__asset"),
            self.trader.account,
        )
        if "asset" in params:
            postings = postings.filter(ledger_account__asset__symbol=params["asset"])
        return self.paginated(postings)


class DepositListView(TraderHistoryView):
    serializer_class = VaultOperationSerializer

    @extend_schema(operation_id="deposits_list", responses=VaultOperationSerializer(many=True))
    def get(self, request):
        operations = for_account(
            VaultOperation.objects.select_related("asset"), self.trader.account
        )
        return self.paginated(operations.filter(kind=VaultOperationKind.DEPOSIT))


class WithdrawalListView(TraderHistoryView):
    serializer_class = VaultOperationSerializer
    permission_classes = [CanWithdraw]

    @extend_schema(operation_id="withdrawals_list", responses=VaultOperationSerializer(many=True))
    def get(self, request):
        operations = for_account(
            VaultOperation.objects.select_related("asset"), self.trader.account
        )
        return self.paginated(operations.filter(kind=VaultOperationKind.WITHDRAWAL))

    @extend_schema(
        operation_id="withdrawals_request",
        request=WithdrawalRequestSerializer,
        responses={
            201: OpenApiResponse(VaultOperationSerializer, "Requested; the amount is held"),
            200: OpenApiResponse(VaultOperationSerializer, "A retry: the original request"),
        },
        summary="Request a withdrawal to an address",
    )
    def post(self, request):
        serializer = WithdrawalRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        asset = Asset.objects.filter(symbol=data["asset"]).first()
        if asset is None:
            raise ApiError("UNKNOWN_ASSET", f"no asset {data['asset']!r}", status=404)
        account = self.trader.account
        try:
            requested = withdrawal_requested(
                account=account,
                asset=asset,
                amount=data["amount"],
                destination_address=data["destination_address"],
                idempotency_key=data["client_request_id"],
            )
        except InsufficientFunds as exc:
            raise ApiError("INSUFFICIENT_FUNDS", str(exc), status=422) from None
        except IdempotencyConflict as exc:
            raise ApiError("IDEMPOTENCY_CONFLICT", str(exc), status=409) from None
        except InvalidWalletAddress as exc:
            raise ApiError("INVALID_ADDRESS", str(exc)) from None
        except InvalidAmount as exc:
            raise ApiError("INVALID_AMOUNT", str(exc)) from None
        except ComplianceRefusal as exc:  # the jurisdiction or the tier's daily limit
            raise ApiError(exc.code, str(exc), status=403) from None
        except VaultError as exc:
            raise ApiError("WITHDRAWAL_REFUSED", str(exc), status=403) from None
        return Response(
            VaultOperationSerializer(requested.operation).data,
            status=status.HTTP_201_CREATED if requested.created else status.HTTP_200_OK,
        )


# --------------------------------------------------------------------------------------
# Positions, P&L, snapshots, statistics
# --------------------------------------------------------------------------------------

ZERO = Decimal(0)


class PositionListView(TraderView):
    @extend_schema(
        operation_id="positions_list",
        responses=PositionValuationSerializer(many=True),
        summary="Your positions, marked at each market's last trade price",
    )
    def get(self, request):
        positions = for_account(
            Position.objects.select_related("asset", "quote"), self.trader.account
        ).order_by("asset__symbol", "quote__symbol")
        prices = market_last_prices()
        for position in positions:
            position.mark = prices.get((position.asset_id, position.quote_id), (None, None))[1]
            position.unrealized_pnl = (
                None
                if position.mark is None
                else position.quantity * position.mark - position.cost_basis
            )
        return Response(PositionValuationSerializer(positions, many=True).data)


class PnlView(TraderView):
    @extend_schema(
        operation_id="pnl_summary",
        parameters=[DayRangeQuerySerializer],
        responses=PnlSummarySerializer,
        summary="Realized P&L over UTC days (all time by default) and unrealized P&L now, "
        "per quote asset",
    )
    def get(self, request):
        params = self.query_params(DayRangeQuerySerializer)
        account = self.trader.account
        stats = for_account(TradingStats.objects.all(), account)
        if "since" in params:
            stats = stats.filter(day__gte=params["since"])
        if "until" in params:
            stats = stats.filter(day__lte=params["until"])
        sums = ("realized_pnl", "fees_paid", "quote_volume", "trade_count")
        realized = {
            row.pop("market__quote_id"): row
            for row in stats.values("market__quote_id").annotate(**{c: Sum(c) for c in sums})
        }
        valuation = portfolio_valuation(account=account)
        quote_ids = realized.keys() | valuation.totals.keys()
        symbols = dict(Asset.objects.filter(pk__in=quote_ids).values_list("pk", "symbol"))
        symbols |= {line.asset_id: line.symbol for line in valuation.assets}
        totals = []
        for quote_id in sorted(quote_ids, key=lambda pk: symbols[pk]):
            period = realized.get(quote_id, dict.fromkeys(sums, 0))
            now = valuation.totals.get(quote_id)
            totals.append(
                {
                    "quote": symbols[quote_id],
                    **{c: period[c] or 0 for c in sums},
                    "unrealized_pnl": now.unrealized_pnl if now else ZERO,
                    "value": now.value if now else ZERO,
                    "unmarked_assets": sorted(
                        symbols[pk] for pk in (now.unmarked_assets if now else ())
                    ),
                }
            )
        body = {"since": params.get("since"), "until": params.get("until"), "totals": totals}
        return Response(PnlSummarySerializer(body).data)


class SnapshotListView(TraderHistoryView):
    serializer_class = PortfolioSnapshotSerializer

    @extend_schema(
        operation_id="portfolio_snapshots_list",
        parameters=[SnapshotQuerySerializer],
        responses=PortfolioSnapshotSerializer(many=True),
        summary="Your portfolio's value over time, newest first (cursor pagination)",
    )
    def get(self, request):
        params = self.query_params(SnapshotQuerySerializer)
        snapshots = for_account(
            PortfolioSnapshot.objects.select_related("quote"), self.trader.account
        ).filter(kind=params["kind"])
        if "since" in params:
            snapshots = snapshots.filter(period_start__gte=params["since"])
        if "until" in params:
            snapshots = snapshots.filter(period_start__lt=params["until"])
        return self.paginated(snapshots)


class PortfolioMetricsView(TraderView):
    @extend_schema(
        operation_id="portfolio_metrics",
        parameters=[SnapshotKindQuerySerializer],
        responses=PortfolioMetricsSerializer,
        summary="Returns, volatility, Sharpe ratio, max drawdown, 1-period 95% VaR and ROI "
        "of your snapshot series; win rate and average trade size of your trades in it",
    )
    def get(self, request):
        kind = self.query_params(SnapshotKindQuerySerializer)["kind"]
        body = portfolio_metrics(account=self.trader.account, kind=kind)
        return Response(PortfolioMetricsSerializer(body).data)


class TradingStatsListView(TraderHistoryView):
    serializer_class = TradingStatsSerializer

    @extend_schema(
        operation_id="stats_list",
        parameters=[StatsQuerySerializer],
        responses=TradingStatsSerializer(many=True),
        summary="Your trading per market and UTC day, newest first (cursor pagination)",
    )
    def get(self, request):
        params = self.query_params(StatsQuerySerializer)
        stats = for_account(TradingStats.objects.select_related("market"), self.trader.account)
        if "market" in params:
            stats = stats.filter(market__symbol=params["market"])
        if "since" in params:
            stats = stats.filter(day__gte=params["since"])
        if "until" in params:
            stats = stats.filter(day__lte=params["until"])
        return self.paginated(stats)


class TradingWindowsView(TraderView):
    @extend_schema(
        operation_id="stats_windows",
        responses=TradingWindowsSerializer(many=True),
        summary="Your last 24 h, 7 d and 30 d of trading (UTC days), per quote asset",
    )
    def get(self, request):
        quotes = Asset.objects.filter(pk__in=Market.objects.values("quote_id").distinct()).order_by(
            "symbol"
        )
        windows = []
        for quote in quotes:
            stats = user_trading_statistics(account=self.trader.account, quote_id=quote.pk)
            windows.append(
                {"quote": quote.symbol, "h24": stats.h24, "d7": stats.d7, "d30": stats.d30}
            )
        return Response(TradingWindowsSerializer(windows, many=True).data)


# --------------------------------------------------------------------------------------
# CSV exports
# --------------------------------------------------------------------------------------


class IgnoreAcceptNegotiation(BaseContentNegotiation):
    """A download answers CSV whatever the client accepts (``Accept: text/csv`` is
    what a client of it would send); an error is the API's JSON."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def csv_response(text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def csv_schema(description: str) -> dict:
    return {(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description=description)}


FILLS_CSV_HEADER = [
    "trade_id",
    "executed_at",
    "market",
    "side",
    "liquidity",
    "order_id",
    "price",
    "quantity",
    "quote_quantity",
    "fee",
    "fee_asset",
]


class FillExportView(TraderView):
    content_negotiation_class = IgnoreAcceptNegotiation

    @extend_schema(
        operation_id="fills_export",
        parameters=[TimeRangeQuerySerializer],
        responses=csv_schema(
            "Your fills, oldest first, as CSV (an attachment); times in UTC ISO 8601, "
            "fees in the fee asset (negative for a maker rebate)."
        ),
        summary="Export your fills as CSV",
    )
    def get(self, request):
        params = self.query_params(TimeRangeQuerySerializer)
        account = self.trader.account
        trades = for_account(Trade.objects.select_related("market__quote"), account)
        if "since" in params:
            trades = trades.filter(executed_at__gte=params["since"])
        if "until" in params:
            trades = trades.filter(executed_at__lt=params["until"])
        out = StringIO()
        writer = csv.writer(out)
        writer.writerow(FILLS_CSV_HEADER)
        # Written out here, in the scope: a streamed body would be read after it closed.
        for fill in FillSerializer(
            trades.order_by("executed_at", "id"), many=True, context={"account": account}
        ).data:
            writer.writerow([fill["id"] if c == "trade_id" else fill[c] for c in FILLS_CSV_HEADER])
        since, until = params.get("since"), params.get("until")
        name = "fills"
        if since:
            name += f"-from-{since:%Y%m%dT%H%M%SZ}"
        if until:
            name += f"-until-{until:%Y%m%dT%H%M%SZ}"
        return csv_response(out.getvalue(), f"{name}.csv")


class GainsReportView(TraderView):
    content_negotiation_class = IgnoreAcceptNegotiation

    @extend_schema(
        operation_id="gains_report",
        parameters=[GainsQuerySerializer],
        responses=csv_schema(
            "Realized gains of the year's disposals, FIFO lots, as CSV (an attachment); "
            "an unknown cost basis, gain or acquisition date is an empty field."
        ),
        summary="Your realized gains report for a calendar year (UTC) as CSV",
    )
    def get(self, request):
        year = self.query_params(GainsQuerySerializer)["year"]
        text = gains_report_csv(account=self.trader.account, year=year)
        return csv_response(text, f"gains-{year}.csv")


urlpatterns = [
    path("balances/", BalanceListView.as_view(), name="balances"),
    path("ledger/", LedgerListView.as_view(), name="ledger"),
    path("deposits/", DepositListView.as_view(), name="deposits"),
    path("withdrawals/", WithdrawalListView.as_view(), name="withdrawals"),
    path("positions/", PositionListView.as_view(), name="positions"),
    path("pnl/", PnlView.as_view(), name="pnl"),
    path("portfolio/snapshots/", SnapshotListView.as_view(), name="portfolio-snapshots"),
    path("portfolio/metrics/", PortfolioMetricsView.as_view(), name="portfolio-metrics"),
    path("stats/", TradingStatsListView.as_view(), name="stats"),
    path("stats/windows/", TradingWindowsView.as_view(), name="stats-windows"),
    path("fills/export/", FillExportView.as_view(), name="fills-export"),
    path("reports/gains/", GainsReportView.as_view(), name="reports-gains"),
]
