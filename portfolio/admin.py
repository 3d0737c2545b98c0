"""The back office for money. Ledger rows are read-only; withdrawals and adjustments
move only through their services (approval actions below), never by editing a row."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.http import HttpRequest

from compliance.services.audit import Actor
from dex.admin import AuditedAdmin, ReadOnlyAdmin
from portfolio.models import (
    AdjustmentStatus,
    Balance,
    FeeTier,
    LedgerAccount,
    LedgerAdjustment,
    LedgerTransaction,
    PortfolioSnapshot,
    Position,
    Posting,
    TradingStats,
    VaultOperation,
    VaultOperationStatus,
    WithdrawalLimit,
)
from portfolio.services.adjustments import (
    adjustment_post,
    adjustment_reject,
    adjustment_request,
)
from portfolio.services.ledger import LedgerError
from portfolio.services.vault import withdrawal_approve, withdrawal_reject


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdmin):
    list_display = ["account", "asset", "available", "held", "total"]
    list_filter = ["asset"]
    search_fields = ["account__wallet_address", "account__label"]
    list_select_related = ["account", "asset"]


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "asset", "owner", "market", "balance", "updated_at"]
    list_filter = ["kind", "asset"]
    search_fields = ["owner__wallet_address", "market__symbol"]
    list_select_related = ["asset", "owner", "market"]


class PostingInline(admin.TabularInline):
    model = Posting
    extra = 0
    can_delete = False
    fields = ["ledger_account", "amount", "order", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "kind",
        "idempotency_key",
        "order",
        "trade",
        "vault_operation",
        "created_at",
    ]
    list_filter = ["kind"]
    search_fields = ["=id", "idempotency_key", "=order__id", "=trade__id"]
    date_hierarchy = "created_at"
    inlines = [PostingInline]
    show_full_result_count = False


@admin.register(Posting)
class PostingAdmin(ReadOnlyAdmin):
    list_display = ["id", "transaction", "ledger_account", "amount", "order", "created_at"]
    list_filter = ["ledger_account__kind", "ledger_account__asset"]
    search_fields = ["=transaction__id", "ledger_account__owner__wallet_address", "=order__id"]
    list_select_related = ["transaction", "ledger_account__asset", "ledger_account__owner"]
    show_full_result_count = False


class ReasonActionForm(ActionForm):
    reason = forms.CharField(required=False, help_text="Required to reject.")


@admin.register(VaultOperation)
class VaultOperationAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "kind",
        "status",
        "account",
        "asset",
        "amount",
        "created_at",
        "reviewed_by",
    ]
    list_filter = ["kind", "status", "asset"]
    search_fields = ["=id", "account__wallet_address", "tx_hash", "destination_address"]
    list_select_related = ["account", "asset", "reviewed_by"]
    date_hierarchy = "created_at"
    action_form = ReasonActionForm
    actions = ["approve_withdrawals", "reject_withdrawals"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # Needed to run the actions; the rows themselves stay read-only.
        return obj is None and request.user.has_perm("portfolio.change_vaultoperation")

    @admin.action(description="Approve selected withdrawals", permissions=["change"])
    def approve_withdrawals(self, request, queryset):
        for operation in queryset.filter(status=VaultOperationStatus.REQUESTED):
            self._run(
                request,
                withdrawal_approve,
                withdrawal=operation,
                approved_by=request.user,
                actor=Actor.from_request(request),
            )

    @admin.action(
        description="Reject selected withdrawals (releases the funds)", permissions=["change"]
    )
    def reject_withdrawals(self, request, queryset):
        reason = request.POST.get("reason", "").strip()
        if not reason:
            self.message_user(request, "Give a reason to reject.", messages.ERROR)
            return
        for operation in queryset:
            self._run(
                request,
                withdrawal_reject,
                withdrawal=operation,
                rejected_by=request.user,
                reason=reason,
                actor=Actor.from_request(request),
            )

    def _run(self, request, service, **kwargs):
        try:
            result = service(**kwargs)
        except LedgerError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"Withdrawal {result.pk} is now {result.status}.")


@admin.register(WithdrawalLimit)
class WithdrawalLimitAdmin(AuditedAdmin):
    list_display = ["kyc_tier", "asset", "auto_approve_max"]
    list_filter = ["asset", "kyc_tier"]
    search_fields = ["asset__symbol"]


@admin.register(FeeTier)
class FeeTierAdmin(AuditedAdmin):
    list_display = ["name", "quote", "min_volume_30d", "maker_fee_rate", "taker_fee_rate"]
    list_filter = ["quote"]
    search_fields = ["name"]


class AdjustmentForm(forms.ModelForm):
    class Meta:
        model = LedgerAdjustment
        fields = ["account", "asset", "amount", "reason"]


@admin.register(LedgerAdjustment)
class LedgerAdjustmentAdmin(admin.ModelAdmin):
    form = AdjustmentForm
    list_display = [
        "id",
        "account",
        "asset",
        "amount",
        "status",
        "requested_by",
        "decided_by",
        "created_at",
    ]
    list_filter = ["status", "asset"]
    search_fields = ["account__wallet_address", "reason"]
    list_select_related = ["account", "asset", "requested_by", "decided_by"]
    actions = ["approve_and_post", "reject"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        # A new adjustment is only a request; a second staff user must approve it.
        created = adjustment_request(
            account=form.cleaned_data["account"],
            asset=form.cleaned_data["asset"],
            amount=form.cleaned_data["amount"],
            reason=form.cleaned_data["reason"],
            requested_by=request.user,
            actor=Actor.from_request(request),
        )
        obj.pk = created.pk

    @admin.action(description="Approve and post (a second staff user)", permissions=["change"])
    def approve_and_post(self, request, queryset):
        self._decide(request, queryset, adjustment_post, "approved_by")

    @admin.action(description="Reject", permissions=["change"])
    def reject(self, request, queryset):
        self._decide(request, queryset, adjustment_reject, "rejected_by")

    def _decide(self, request, queryset, service, user_arg):
        for adjustment in queryset.filter(status=AdjustmentStatus.PENDING):
            try:
                service(
                    adjustment=adjustment,
                    actor=Actor.from_request(request),
                    **{user_arg: request.user},
                )
            except LedgerError as exc:
                self.message_user(request, f"#{adjustment.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Adjustment {adjustment.pk} decided.")


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    """Moved only by settled trades (``positions_apply``)."""

    list_display = [
        "account",
        "asset",
        "quote",
        "quantity",
        "average_entry_price",
        "cost_basis",
        "realized_pnl",
        "fees_paid",
        "trade_count",
        "updated_at",
    ]
    list_filter = ["asset", "quote"]
    search_fields = ["account__wallet_address", "account__label"]
    list_select_related = ["account", "asset", "quote"]


@admin.register(TradingStats)
class TradingStatsAdmin(ReadOnlyAdmin):
    list_display = [
        "account",
        "market",
        "day",
        "buy_volume",
        "sell_volume",
        "quote_volume",
        "trade_count",
        "maker_count",
        "taker_count",
        "fees_paid",
        "realized_pnl",
    ]
    list_filter = ["market", "day"]
    search_fields = ["account__wallet_address", "account__label"]
    list_select_related = ["account", "market"]
    date_hierarchy = "day"
    show_full_result_count = False


@admin.register(PortfolioSnapshot)
class PortfolioSnapshotAdmin(ReadOnlyAdmin):
    list_display = [
        "account",
        "kind",
        "period_start",
        "period_end",
        "quote",
        "total_value",
        "net_flows",
        "realized_pnl",
        "unrealized_pnl",
        "taken_at",
    ]
    list_filter = ["kind", "quote"]
    search_fields = ["account__wallet_address", "account__label"]
    list_select_related = ["account", "quote"]
    date_hierarchy = "period_start"
    show_full_result_count = False
