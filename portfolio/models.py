"""The ledger: double-entry books in which every movement of money is recorded.

- ``LedgerAccount`` — one per (kind, asset, trader or market): a trader's AVAILABLE
  and HELD funds, the venue's FEE_REVENUE per market, the VAULT custody account that
  mirrors the on-chain vault, and the ADJUSTMENT account for staff corrections.
- ``LedgerTransaction`` — one economic event (a deposit, a hold, a fill, …), with
  an idempotency key so that a retried call posts once.
- ``Posting`` — a signed amount on one ledger account. A transaction's postings sum
  to zero per asset; PostgreSQL checks it at commit (a deferred constraint trigger).

A ledger account's ``balance`` is the sum of its postings, kept by a statement-level
trigger on ``Posting`` and writable by nothing else, so it cannot drift. Trader
balances (and fee revenue) can never go negative; the vault's can never go positive
(it is the contra side of every deposit).
"""

from __future__ import annotations

import pgtrigger
from django.conf import settings
from django.db import models
from django.db.models import F, Q

from dex.db import (
    AmountField,
    CreatedAtField,
    HashField,
    RateField,
    UpdatedAtField,
    append_only_triggers,
    updated_at_trigger,
)
from exchange.models import Account, Asset, Market, Order, Trade


class LedgerAccountKind(models.TextChoices):
    AVAILABLE = "AVAILABLE", "Trader: available"
    HELD = "HELD", "Trader: held for open orders and withdrawals"
    FEE_REVENUE = "FEE_REVENUE", "Venue: fee revenue"
    VAULT = "VAULT", "Vault custody (on-chain mirror)"
    ADJUSTMENT = "ADJUSTMENT", "Venue: staff adjustments"


TRADER_KINDS = (LedgerAccountKind.AVAILABLE, LedgerAccountKind.HELD)


class LedgerAccount(models.Model):
    kind = models.CharField(max_length=12, choices=LedgerAccountKind.choices)
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="ledger_accounts")
    owner = models.ForeignKey(
        Account, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_accounts"
    )
    # Fee revenue is booked per market so that matchers of different markets never
    # queue behind each other on one fee row.
    market = models.ForeignKey(
        Market, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_accounts"
    )
    balance = AmountField(default=0, editable=False)
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "asset", "owner", "market"],
                nulls_distinct=False,
                name="ledgeraccount_unique",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=TRADER_KINDS, owner__isnull=False, market__isnull=True)
                | Q(kind=LedgerAccountKind.FEE_REVENUE, owner__isnull=True, market__isnull=False)
                | Q(
                    kind__in=[LedgerAccountKind.VAULT, LedgerAccountKind.ADJUSTMENT],
                    owner__isnull=True,
                    market__isnull=True,
                ),
                name="ledgeraccount_owner_matches_kind",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=[*TRADER_KINDS, LedgerAccountKind.FEE_REVENUE], balance__gte=0)
                | Q(kind=LedgerAccountKind.VAULT, balance__lte=0)
                | Q(kind=LedgerAccountKind.ADJUSTMENT),
                name="ledgeraccount_balance_sign",
            ),
        ]
        triggers = [
            updated_at_trigger(),
            pgtrigger.ReadOnly(
                name="identity_read_only", fields=["kind", "asset", "owner", "market"]
            ),
            # Only the posting trigger may move a balance: in a WHEN clause pg_trigger_depth()
            # is the caller's depth, 0 for a statement sent by a client.
            pgtrigger.Trigger(
                name="balance_moves_only_by_posting",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition(
                    "OLD.balance IS DISTINCT FROM NEW.balance AND pg_trigger_depth() = 0"
                ),
                func=(
                    "RAISE EXCEPTION 'ledger balances change only through postings' "
                    "USING ERRCODE = 'check_violation'; RETURN NULL;"
                ),
            ),
            pgtrigger.Protect(name="protect_delete", operation=pgtrigger.Delete),
        ]

    def __str__(self) -> str:
        if self.owner_id:
            return f"{self.kind} asset {self.asset_id} of account {self.owner_id}"
        if self.market_id:
            return f"{self.kind} asset {self.asset_id} of market {self.market_id}"
        return f"{self.kind} asset {self.asset_id}"


class TransactionKind(models.TextChoices):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL_HOLD = "WITHDRAWAL_HOLD"
    WITHDRAWAL_RELEASE = "WITHDRAWAL_RELEASE"
    WITHDRAWAL = "WITHDRAWAL"
    HOLD = "HOLD"
    RELEASE = "RELEASE"
    TRADE = "TRADE"
    FEE = "FEE"
    ADJUSTMENT = "ADJUSTMENT"


_TRANSACTION_BALANCES = """
    IF NOT EXISTS (SELECT 1 FROM portfolio_posting WHERE transaction_id = NEW.id) THEN
        RAISE EXCEPTION 'ledger transaction % has no postings', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT a.asset_id, sum(p.amount) INTO unbalanced_asset, unbalanced_sum
      FROM portfolio_posting p JOIN portfolio_ledgeraccount a ON a.id = p.ledger_account_id
     WHERE p.transaction_id = NEW.id
     GROUP BY a.asset_id
    HAVING sum(p.amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: asset % is off by %',
            NEW.id, unbalanced_asset, unbalanced_sum USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
"""


class LedgerTransaction(models.Model):
    kind = models.CharField(max_length=20, choices=TransactionKind.choices)
    idempotency_key = models.CharField(max_length=128, unique=True)
    description = models.CharField(max_length=255, blank=True)
    order = models.ForeignKey(
        Order, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_transactions"
    )
    trade = models.ForeignKey(
        Trade, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_transactions"
    )
    vault_operation = models.ForeignKey(
        "VaultOperation",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_transactions",
    )
    adjustment = models.ForeignKey(
        "LedgerAdjustment",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_transactions",
    )
    # The database transaction that wrote it: postings may only join a ledger
    # transaction written in their own database transaction (see Posting's trigger),
    # so the balance check at commit sees every posting it will ever have.
    db_txid = models.BigIntegerField(
        db_default=models.Func(function="txid_current"), editable=False
    )
    created_at = CreatedAtField()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["order"], name="ledgertxn_order_idx"),
            models.Index(fields=["trade"], name="ledgertxn_trade_idx"),
        ]
        triggers = [
            *append_only_triggers(),
            pgtrigger.Trigger(
                name="postings_balance_at_commit",
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                timing=pgtrigger.Deferred,
                declare=[("unbalanced_asset", "BIGINT"), ("unbalanced_sum", "NUMERIC")],
                func=_TRANSACTION_BALANCES,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


_POSTINGS_APPLY = """
    IF EXISTS (
        SELECT 1 FROM new_postings p
          JOIN portfolio_ledgertransaction t ON t.id = p.transaction_id
         WHERE t.db_txid <> txid_current()
    ) THEN
        RAISE EXCEPTION 'postings may only be added to a ledger transaction in the database '
            'transaction that created it' USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (
        SELECT 1 FROM new_postings p
          JOIN portfolio_ledgeraccount a ON a.id = p.ledger_account_id
          LEFT JOIN exchange_order o ON o.id = p.order_id
         WHERE p.order_id IS NOT NULL
           AND (a.kind <> 'HELD' OR o.account_id IS DISTINCT FROM a.owner_id)
    ) THEN
        RAISE EXCEPTION 'only a held posting on the order''s own account may name an order'
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE portfolio_ledgeraccount a
       SET balance = a.balance + d.delta
      FROM (SELECT ledger_account_id, sum(amount) AS delta
              FROM new_postings GROUP BY ledger_account_id) d
     WHERE a.id = d.ledger_account_id;
    RETURN NULL;
"""


class Posting(models.Model):
    """A signed amount on one ledger account. ``order`` names the order a HELD posting
    reserves funds for (or releases them from), so each order's hold is the sum of its
    postings and can be checked against what the order could still cost."""

    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="postings"
    )
    ledger_account = models.ForeignKey(
        LedgerAccount, on_delete=models.PROTECT, related_name="postings"
    )
    amount = AmountField()
    order = models.ForeignKey(
        Order, on_delete=models.PROTECT, null=True, blank=True, related_name="hold_postings"
    )
    created_at = CreatedAtField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="posting_amount_non_zero"),
        ]
        indexes = [
            models.Index(fields=["transaction"], name="posting_transaction_idx"),
            models.Index(fields=["ledger_account", "-id"], name="posting_account_idx"),
            models.Index(
                fields=["order"], condition=Q(order__isnull=False), name="posting_order_idx"
            ),
        ]
        triggers = [
            *append_only_triggers(),
            pgtrigger.Trigger(
                name="apply_to_balances",
                level=pgtrigger.Statement,
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                referencing=pgtrigger.Referencing(new="new_postings"),
                func=_POSTINGS_APPLY,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount:+} on {self.ledger_account_id}"


class Balance(models.Model):
    """A trader's available and held funds per asset: a read-only view over the
    trader's ledger accounts (database view ``portfolio_balance``)."""

    id = models.CharField(max_length=40, primary_key=True)
    account = models.ForeignKey(Account, on_delete=models.DO_NOTHING, related_name="+")
    asset = models.ForeignKey(Asset, on_delete=models.DO_NOTHING, related_name="+")
    available = AmountField()
    held = AmountField()
    total = AmountField()

    class Meta:
        managed = False
        db_table = "portfolio_balance"
        ordering = ["account", "asset"]

    def __str__(self) -> str:
        return f"{self.account_id}/{self.asset_id}: {self.available} + {self.held}"


# --------------------------------------------------------------------------------------
# Deposits and withdrawals
# --------------------------------------------------------------------------------------


class VaultOperationKind(models.TextChoices):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"


class VaultOperationStatus(models.TextChoices):
    REQUESTED = "REQUESTED"
    APPROVED = "APPROVED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"


PENDING_WITHDRAWAL_STATUSES = (
    VaultOperationStatus.REQUESTED,
    VaultOperationStatus.APPROVED,
    VaultOperationStatus.PROCESSING,
)


class VaultOperation(models.Model):
    """Money entering or leaving the venue through the on-chain vault.

    A deposit is recorded COMPLETED when the chain event is credited. A withdrawal is
    REQUESTED (its amount held), APPROVED (automatically under the trader's KYC-tier
    limit, otherwise by staff), PROCESSING (sent on chain) and COMPLETED — or REJECTED
    / FAILED, releasing the hold.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="vault_operations")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="vault_operations")
    kind = models.CharField(max_length=10, choices=VaultOperationKind.choices)
    status = models.CharField(max_length=10, choices=VaultOperationStatus.choices)
    amount = AmountField()
    balance_after = AmountField(
        null=True, blank=True, help_text="Trader's available balance right after the posting."
    )
    idempotency_key = models.CharField(max_length=128, unique=True)
    destination_address = models.CharField(max_length=42, blank=True)
    tx_hash = HashField(null=True, blank=True)
    log_index = models.PositiveIntegerField(null=True, blank=True)
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=255, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="vaultop_amount_positive"),
            # A chain event is credited once.
            models.UniqueConstraint(
                fields=["tx_hash", "log_index"],
                condition=Q(kind=VaultOperationKind.DEPOSIT),
                name="vaultop_deposit_event_once",
            ),
            models.CheckConstraint(
                condition=Q(
                    kind=VaultOperationKind.DEPOSIT,
                    status=VaultOperationStatus.COMPLETED,
                    tx_hash__isnull=False,
                    log_index__isnull=False,
                )
                | Q(
                    kind=VaultOperationKind.WITHDRAWAL,
                    destination_address__regex=r"^0x[0-9a-f]{40}$",
                ),
                name="vaultop_kind_fields",
            ),
            models.CheckConstraint(
                condition=Q(
                    status=VaultOperationStatus.COMPLETED,
                    completed_at__isnull=False,
                )
                | (~Q(status=VaultOperationStatus.COMPLETED) & Q(completed_at__isnull=True)),
                name="vaultop_completed_at",
            ),
            models.CheckConstraint(
                condition=~Q(
                    status__in=[VaultOperationStatus.REJECTED, VaultOperationStatus.FAILED]
                )
                | ~Q(reason=""),
                name="vaultop_refusal_has_reason",
            ),
        ]
        indexes = [
            models.Index(fields=["account", "-created_at"], name="vaultop_account_idx"),
            models.Index(
                fields=["status", "created_at"],
                condition=Q(status__in=PENDING_WITHDRAWAL_STATUSES),
                name="vaultop_pending_idx",
            ),
        ]
        triggers = [
            updated_at_trigger(),
            pgtrigger.FSM(
                name="status_transitions",
                field="status",
                transitions=[
                    (VaultOperationStatus.REQUESTED, VaultOperationStatus.APPROVED),
                    (VaultOperationStatus.REQUESTED, VaultOperationStatus.REJECTED),
                    (VaultOperationStatus.APPROVED, VaultOperationStatus.PROCESSING),
                    (VaultOperationStatus.APPROVED, VaultOperationStatus.REJECTED),
                    (VaultOperationStatus.PROCESSING, VaultOperationStatus.COMPLETED),
                    (VaultOperationStatus.PROCESSING, VaultOperationStatus.FAILED),
                ],
            ),
            pgtrigger.ReadOnly(
                name="identity_read_only",
                fields=[
                    "account",
                    "asset",
                    "kind",
                    "amount",
                    "idempotency_key",
                    "destination_address",
                ],
            ),
            pgtrigger.Protect(name="protect_delete", operation=pgtrigger.Delete),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.asset_id} ({self.status})"


class WithdrawalLimit(models.Model):
    """Withdrawals up to ``auto_approve_max`` of an asset by a trader of this KYC tier
    are approved automatically; larger ones (or any, without a row) wait for staff."""

    kyc_tier = models.PositiveSmallIntegerField()
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    auto_approve_max = AmountField()

    class Meta:
        ordering = ["asset", "kyc_tier"]
        constraints = [
            models.UniqueConstraint(fields=["kyc_tier", "asset"], name="withdrawallimit_unique"),
            models.CheckConstraint(
                condition=Q(auto_approve_max__gte=0), name="withdrawallimit_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"tier {self.kyc_tier}: {self.auto_approve_max} {self.asset_id}"


# --------------------------------------------------------------------------------------
# Fees and staff corrections
# --------------------------------------------------------------------------------------


class FeeTier(models.Model):
    """Volume discounts: a trader whose 30-day traded notional in a quote asset reaches
    ``min_volume_30d`` pays at most these rates in markets quoted in that asset (a tier
    never raises a market's own rates)."""

    name = models.CharField(max_length=64)
    quote = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="fee_tiers")
    min_volume_30d = AmountField()
    maker_fee_rate = RateField()
    taker_fee_rate = RateField()

    class Meta:
        ordering = ["quote", "min_volume_30d"]
        constraints = [
            models.UniqueConstraint(fields=["quote", "min_volume_30d"], name="feetier_unique"),
            models.CheckConstraint(
                condition=Q(min_volume_30d__gte=0), name="feetier_volume_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(taker_fee_rate__gte=0, maker_fee_rate__gte=-F("taker_fee_rate")),
                name="feetier_rates",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (≥ {self.min_volume_30d} {self.quote_id})"


class AdjustmentStatus(models.TextChoices):
    PENDING = "PENDING"
    POSTED = "POSTED"
    REJECTED = "REJECTED"


class LedgerAdjustment(models.Model):
    """A staff correction to a trader's available balance. One staff user requests it,
    a different one approves it; only then is it posted."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="adjustments")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = AmountField(help_text="Positive credits the trader, negative debits.")
    reason = models.CharField(max_length=255)
    status = models.CharField(
        max_length=8, choices=AdjustmentStatus.choices, default=AdjustmentStatus.PENDING
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = CreatedAtField()
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="adjustment_amount_non_zero"),
            models.CheckConstraint(condition=~Q(reason=""), name="adjustment_has_reason"),
            # Four eyes: the approver is never the requester.
            models.CheckConstraint(
                condition=Q(
                    status=AdjustmentStatus.PENDING,
                    decided_by__isnull=True,
                    decided_at__isnull=True,
                )
                | (
                    ~Q(status=AdjustmentStatus.PENDING)
                    & Q(decided_by__isnull=False, decided_at__isnull=False)
                    & ~Q(decided_by=F("requested_by"))
                ),
                name="adjustment_four_eyes",
            ),
        ]
        triggers = [
            pgtrigger.FSM(
                name="status_transitions",
                field="status",
                transitions=[
                    (AdjustmentStatus.PENDING, AdjustmentStatus.POSTED),
                    (AdjustmentStatus.PENDING, AdjustmentStatus.REJECTED),
                ],
            ),
            pgtrigger.ReadOnly(
                name="request_read_only",
                fields=["account", "asset", "amount", "reason", "requested_by", "created_at"],
            ),
            pgtrigger.Protect(name="protect_delete", operation=pgtrigger.Delete),
        ]

    def __str__(self) -> str:
        return f"{self.amount:+} {self.asset_id} for {self.account_id} ({self.status})"
