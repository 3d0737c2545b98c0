"""The exchange's back-office views. History (orders, status changes, commands, trades,
snapshots) is read-only here: it changes only through the order services and the
matcher, never by hand."""

from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from dex.admin import AuditedAdmin, ReadOnlyAdmin
from exchange.models import (
    Account,
    ApiKey,
    Asset,
    Market,
    Order,
    OrderArchive,
    OrderBookSnapshot,
    OrderCommand,
    OrderStatusHistory,
    Trade,
    WebSocketConnection,
)
from portfolio import metrics
from portfolio.charts import line_chart
from portfolio.models import SnapshotKind
from portfolio.selectors import (
    portfolio_valuation,
    position_list,
    snapshot_value_series,
    user_trading_statistics,
)
from portfolio.services.snapshots import snapshot_points

# The chart draws at most this many snapshots (a month of hourly ones), the latest.
CHART_MAX_POINTS = 720


@admin.register(Asset)
class AssetAdmin(AuditedAdmin):
    list_display = ["symbol", "name", "decimals", "contract_address", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["symbol", "name", "contract_address"]
    readonly_fields = ["created_at", "updated_at"]


@admin.register(Market)
class MarketAdmin(AuditedAdmin):
    list_display = [
        "symbol",
        "status",
        "tick_size",
        "lot_size",
        "min_quantity",
        "min_notional",
        "maker_fee_rate",
        "taker_fee_rate",
    ]
    list_filter = ["status", "quote"]
    search_fields = ["symbol", "base__symbol", "quote__symbol"]
    list_select_related = ["base", "quote"]
    # Status moves through the matcher's journal (halt/resume), never by a form edit.
    readonly_fields = ["status", "created_at", "updated_at"]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        if obj is not None:  # the pair is fixed once the market exists
            return [*self.readonly_fields, "symbol", "base", "quote"]
        return self.readonly_fields


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ["name", "prefix", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Account)
class AccountAdmin(AuditedAdmin):
    list_display = [
        "id",
        "wallet_address",
        "label",
        "status",
        "country",
        "kyc_tier",
        "created_at",
        "portfolio_link",
    ]
    list_filter = ["status", "kyc_tier", "country"]
    search_fields = ["wallet_address", "label"]
    # Freezes and closures are compliance actions with a reason and an audit record.
    readonly_fields = ["status", "created_at", "updated_at"]
    date_hierarchy = "created_at"
    inlines = [ApiKeyInline]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        if obj is not None:
            # The tier and the country an account trades under are what its approved
            # KYC case says (compliance.services.kyc), never a hand edit.
            return [*self.readonly_fields, "wallet_address", "kyc_tier", "country"]
        return self.readonly_fields

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/portfolio/",
                self.admin_site.admin_view(self.portfolio_view),
                name="{}_{}_portfolio".format(*info),
            ),
            *super().get_urls(),
        ]

    @admin.display(description="Portfolio")
    def portfolio_link(self, account: Account) -> str:
        url = reverse("admin:exchange_account_portfolio", args=[quote(account.pk)])
        return format_html('<a href="{}">Portfolio</a>', url)

    def portfolio_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The account's portfolio as the trader would see it: read-only, built from the
        positions, trading statistics and snapshots the trades keep."""
        account = self.get_object(request, unquote(object_id))
        if account is None:
            raise Http404("No such account.")
        # Built from the account's balances: for staff who may read those.
        if not self.has_view_permission(request, account) or not request.user.has_perm(
            "portfolio.view_balance"
        ):
            raise PermissionDenied
        kind = request.GET.get("series", SnapshotKind.INTERVAL)
        if kind not in SnapshotKind.values:
            kind = SnapshotKind.INTERVAL

        valuation = portfolio_valuation(account=account)
        lines = {(line.asset_id, line.quote_id): line for line in valuation.assets}
        positions = [
            (position, lines.get((position.asset_id, position.quote_id)))
            for position in position_list(account=account)
        ]
        quotes = Asset.objects.in_bulk(
            set(valuation.totals) | {position.quote_id for position, _ in positions}
        )
        totals = [(quotes[quote_id], t) for quote_id, t in sorted(valuation.totals.items())]
        windows = [
            (asset, user_trading_statistics(account=account, quote_id=quote_id))
            for quote_id, asset in sorted(quotes.items())
        ]
        daily = snapshot_points(account=account, kind=SnapshotKind.DAILY)
        summary = metrics.summarize(daily, periods_per_year=365)
        series = snapshot_value_series(account=account, kind=kind, limit=CHART_MAX_POINTS)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": account,
            "title": f"Portfolio of {account}",
            "positions": positions,
            "totals": totals,
            "windows": windows,
            "daily_count": len(daily),
            # Drawdown is 0 for a series with no returns; a blank says there is no data.
            "metrics": [
                ("Return on investment", _percent(summary.roi)),
                ("Volatility (annualised)", _percent(summary.volatility)),
                ("Sharpe ratio (annualised)", _ratio(summary.sharpe_ratio)),
                ("Max drawdown", _percent(summary.max_drawdown if summary.returns else None)),
                ("1-day VaR (95%, historical)", _percent(summary.value_at_risk_95)),
            ],
            "series_kind": kind,
            "series_kinds": SnapshotKind.choices,
            "chart": line_chart(series),
            "snapshot_count": len(series),
        }
        return TemplateResponse(request, "admin/exchange/account/portfolio.html", context)


NO_DATA = "\u2014"


def _percent(value: float | None) -> str:
    # + 0.0 turns a -0.0 (no loss at all, negated) into 0.0.
    return NO_DATA if value is None else f"{value + 0.0:.2%}"


def _ratio(value: float | None) -> str:
    return NO_DATA if value is None else f"{value:.2f}"


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = [
        "prefix",
        "name",
        "account",
        "scopes",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "account__wallet_address"]
    list_select_related = ["account"]
    exclude = ["key_hash"]


class OrderStatusHistoryInline(admin.TabularInline):
    model = OrderStatusHistory
    extra = 0
    can_delete = False
    fields = ["changed_at", "from_status", "to_status", "filled", "remaining", "sequence", "reason"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "market",
        "account",
        "side",
        "type",
        "time_in_force",
        "price",
        "quantity",
        "filled",
        "status",
        "created_at",
    ]
    list_filter = ["status", "market", "side", "type", "time_in_force", "post_only"]
    search_fields = ["=id", "client_order_id", "order_hash", "account__wallet_address"]
    list_select_related = ["market", "account"]
    date_hierarchy = "created_at"
    inlines = [OrderStatusHistoryInline]
    show_full_result_count = False


# History names orders by id: an order that finished long ago is in the archive, not in
# exchange_order, so these pages show and search the id rather than join the order.


@admin.register(OrderStatusHistory)
class OrderStatusHistoryAdmin(ReadOnlyAdmin):
    list_display = ["order_id", "from_status", "to_status", "filled", "remaining", "changed_at"]
    list_filter = ["to_status"]
    search_fields = ["=order__id"]
    show_full_result_count = False


@admin.register(OrderCommand)
class OrderCommandAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "market",
        "kind",
        "account",
        "order_id",
        "status",
        "sequence",
        "created_at",
    ]
    list_filter = ["status", "kind", "market"]
    search_fields = ["=id", "=order__id", "account__wallet_address"]
    list_select_related = ["market", "account"]
    show_full_result_count = False


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "market",
        "sequence",
        "price",
        "quantity",
        "aggressor_side",
        "buyer",
        "seller",
        "settlement_status",
        "executed_at",
    ]
    list_filter = ["market", "settlement_status", "aggressor_side"]
    search_fields = [
        "=id",
        "=maker_order__id",
        "=taker_order__id",
        "buyer__wallet_address",
        "seller__wallet_address",
    ]
    list_select_related = ["market", "buyer", "seller"]
    date_hierarchy = "executed_at"
    show_full_result_count = False


@admin.register(OrderArchive)
class OrderArchiveAdmin(ReadOnlyAdmin):
    """Orders that finished long ago, moved out of the live order table with every
    column as it was; their trades, commands and history name them by this id."""

    list_display = [
        "order_id",
        "client_order_id",
        "market_id",
        "account_id",
        "side",
        "type",
        "price",
        "quantity",
        "filled",
        "status",
        "created_at",
        "done_at",
        "archived_at",
    ]
    list_filter = ["status", "side", "type"]
    search_fields = ["=order_id", "=account_id", "client_order_id", "order_hash"]
    date_hierarchy = "done_at"
    show_full_result_count = False


@admin.register(OrderBookSnapshot)
class OrderBookSnapshotAdmin(ReadOnlyAdmin):
    list_display = [
        "market",
        "taken_at",
        "sequence",
        "best_bid",
        "best_ask",
        "spread",
        "last_price",
        "volume_24h",
    ]
    list_filter = ["market"]
    list_select_related = ["market"]
    date_hierarchy = "taken_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[OrderBookSnapshot]:
        return super().get_queryset(request).select_related("market")


@admin.register(WebSocketConnection)
class WebSocketConnectionAdmin(ReadOnlyAdmin):
    """Stream connections, for monitoring: open ones have no disconnect time."""

    list_display = [
        "connection_id",
        "account",
        "client_address",
        "connected_at",
        "last_seen_at",
        "disconnected_at",
        "close_code",
        "messages_sent",
        "messages_received",
    ]
    list_filter = [("disconnected_at", admin.EmptyFieldListFilter), "close_code", "connected_at"]
    search_fields = ["=connection_id", "account__wallet_address", "client_address"]
    list_select_related = ["account"]
    date_hierarchy = "connected_at"
