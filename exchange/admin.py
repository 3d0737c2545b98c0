"""The exchange's back-office views. History (orders, status changes, commands, trades,
snapshots) is read-only here: it changes only through the order services and the
matcher, never by hand."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from dex.admin import ReadOnlyAdmin
from exchange.models import (
    Account,
    ApiKey,
    Asset,
    Market,
    Order,
    OrderBookSnapshot,
    OrderCommand,
    OrderStatusHistory,
    Trade,
)


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ["symbol", "name", "decimals", "contract_address", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["symbol", "name", "contract_address"]
    readonly_fields = ["created_at", "updated_at"]


@admin.register(Market)
class MarketAdmin(admin.ModelAdmin):
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
class AccountAdmin(admin.ModelAdmin):
    list_display = ["id", "wallet_address", "label", "status", "country", "kyc_tier", "created_at"]
    list_filter = ["status", "kyc_tier", "country"]
    search_fields = ["wallet_address", "label"]
    # Freezes and closures are compliance actions with a reason and an audit record.
    readonly_fields = ["status", "created_at", "updated_at"]
    date_hierarchy = "created_at"
    inlines = [ApiKeyInline]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        if obj is not None:
            return [*self.readonly_fields, "wallet_address"]
        return self.readonly_fields


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


@admin.register(OrderStatusHistory)
class OrderStatusHistoryAdmin(ReadOnlyAdmin):
    list_display = ["order", "from_status", "to_status", "filled", "remaining", "changed_at"]
    list_filter = ["to_status"]
    search_fields = ["=order__id", "order__client_order_id"]
    list_select_related = ["order"]
    show_full_result_count = False


@admin.register(OrderCommand)
class OrderCommandAdmin(ReadOnlyAdmin):
    list_display = ["id", "market", "kind", "account", "order", "status", "sequence", "created_at"]
    list_filter = ["status", "kind", "market"]
    search_fields = ["=id", "=order__id", "account__wallet_address"]
    list_select_related = ["market", "account", "order"]
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
