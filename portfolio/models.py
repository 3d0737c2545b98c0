"""The ledger: double-entry books in which every movement of money is recorded.

- ``LedgerAccount`` — one per (kind, asset, trader or market): a trader's AVAILABLE
  and HELD funds, the venue's FEE_REVENUE per market, the VAULT custody account that
  mirrors the on-chain vault, and the ADJUSTMENT account for staff corrections.
- ``LedgerTransaction`` — one economic event (a deposit, a hold, a fill, …), with
  an idempotency key so that a retried call posts once.
- ``Posting`` — a signed amount on one ledger account. A transaction's postings sum
  to zero per asset; PostgreSQL checks it at commit (a deferred constraint trigger,
  one per INSERT statement through ``LedgerCheck``).

A ledger account's ``balance`` is the sum of its postings, kept by a statement-level
trigger on ``Posting`` and writable by nothing else, so it cannot drift. Trader
balances (and fee revenue) can never go negative; the vault's can never go positive
(it is the contra side of every deposit).

Beside the ledger, derived from the trades as they settle: ``Position`` (a trader's
inventory of an asset, its average cost and realized P&L) and ``TradingStats`` (a
trader's volumes, fees and P&L per market and UTC day).
"""

from __future__ import annotations

import pgtrigger
from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import F, Q

from dex.db import (
    HASH_REGEX,
    AmountField,
    CreatedAtField,
    HashField,
    PriceField,
    RateField,
    UpdatedAtField,
    append_only_triggers,
    created_as_trigger,
    truncate_keeps_history,
    truncate_keeps_references,
    updated_at_trigger,
)
from exchange.models import Account, Asset, Market, Order, Trade, updated_at_stamp


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
            updated_at_stamp(),
            truncate_keeps_references("portfolio_posting.ledger_account_id"),
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
            # A ledger account opens empty: its balance is the sum of its postings, and
            # it has none yet.
            pgtrigger.Trigger(
                name="opens_empty",
                when=pgtrigger.Before,
                operation=pgtrigger.Insert,
                condition=pgtrigger.Condition("NEW.balance <> 0"),
                func=(
                    "RAISE EXCEPTION 'ledger account opened holding %: balances come only "
                    "from postings', NEW.balance USING ERRCODE = 'check_violation'; RETURN NULL;"
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


# Each INSERT statement on ledger transactions queues one balance check for all the rows
# it wrote (a constraint trigger must be per row, so the statement leaves one row in
# ``LedgerCheck`` and the check is deferred on that row): a matcher batch of hundreds of
# ledger transactions costs one check at commit, not one per transaction.
# Also the rules of the foreign keys to the order (``exchange.models.order_references_check``)
# and to the trade: checked here for the whole statement, not by a constraint's trigger
# per row (see ``Posting``). Trades are never deleted (append-only), so a trade found
# here stays.
_TRANSACTIONS_QUEUE_CHECK = """
    IF EXISTS (SELECT 1 FROM new_transactions n
                WHERE n.order_id IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM exchange_order o WHERE o.id = n.order_id)) THEN
        RAISE EXCEPTION 'insert on table "%" names an order that is not in exchange_order',
            TG_TABLE_NAME USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM new_transactions n
                WHERE n.trade_id IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM exchange_trade t WHERE t.id = n.trade_id)) THEN
        RAISE EXCEPTION 'insert on table "%" names a trade that is not in exchange_trade',
            TG_TABLE_NAME USING ERRCODE = 'foreign_key_violation';
    END IF;
    INSERT INTO portfolio_ledgercheck (transaction_ids)
    SELECT array_agg(id) FROM new_transactions HAVING count(*) > 0;
    RETURN NULL;
"""

# The postings' side of the balance check: their ledger transactions are checked again at
# commit unless the newest queued check (this transaction's: the others' are invisible or
# gone) already holds them. A statement that writes both, as the ledger services' does,
# fires the transactions' trigger first, so one check is queued for it
# (tests/portfolio/test_ledger_invariants.py); postings added to an older transaction
# queue one more, which costs a check and misses nothing. A queued check runs once, and a
# client can run it early (SET CONSTRAINTS ... IMMEDIATE); postings added to those ledger
# transactions afterwards, in the same database transaction, are checked by this one.
_POSTINGS_QUEUE_CHECK = """
    INSERT INTO portfolio_ledgercheck (transaction_ids)
    SELECT array_agg(q.id)
      FROM (SELECT DISTINCT transaction_id AS id FROM new_postings
            EXCEPT
            SELECT unnest(c.transaction_ids) FROM portfolio_ledgercheck c
             WHERE c.id = (SELECT max(id) FROM portfolio_ledgercheck)) q
    HAVING count(*) > 0;
"""

_TRANSACTIONS_BALANCE = """
    SELECT t.id INTO unbalanced_id
      FROM unnest(NEW.transaction_ids) AS t(id)
     WHERE NOT EXISTS (SELECT 1 FROM portfolio_posting p WHERE p.transaction_id = t.id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % has no postings', unbalanced_id
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT p.transaction_id, a.asset_id, sum(p.amount)
      INTO unbalanced_id, unbalanced_asset, unbalanced_sum
      FROM portfolio_posting p JOIN portfolio_ledgeraccount a ON a.id = p.ledger_account_id
     WHERE p.transaction_id = ANY (NEW.transaction_ids)
     GROUP BY p.transaction_id, a.asset_id
    HAVING sum(p.amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: asset % is off by %',
            unbalanced_id, unbalanced_asset, unbalanced_sum USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM portfolio_ledgercheck WHERE id = NEW.id;
    RETURN NULL;
"""


class LedgerTransaction(models.Model):
    kind = models.CharField(max_length=20, choices=TransactionKind.choices)
    # Unique by a constraint in Meta: ``unique=True`` would add a second, pattern-matching
    # index that no query uses and every insert pays for.
    idempotency_key = models.CharField(max_length=128)
    description = models.CharField(max_length=255, blank=True)
    # Each foreign key is indexed in Meta, only where it is set: a transaction names one
    # of them, and the matcher writes one per fill whose other three are NULL. The
    # order's foreign key rule is ``order_references_check``'s: an order may move to the
    # archive.
    order = models.ForeignKey(
        Order,
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        related_name="ledger_transactions",
        db_index=False,
        db_constraint=False,
    )
    # The trade's foreign key rule is ``queue_balance_check``'s, not a constraint's.
    trade = models.ForeignKey(
        Trade,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_transactions",
        db_index=False,
        db_constraint=False,
    )
    vault_operation = models.ForeignKey(
        "VaultOperation",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_transactions",
        db_index=False,
    )
    adjustment = models.ForeignKey(
        "LedgerAdjustment",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_transactions",
        db_index=False,
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
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"], name="ledgertxn_unique_idempotency_key"
            ),
        ]
        indexes = [
            models.Index(
                fields=[name],
                condition=Q(**{f"{name}__isnull": False}),
                name=f"ledgertxn_{name}_idx",
            )
            for name in ("order", "trade", "vault_operation", "adjustment")
        ]
        triggers = [
            *append_only_triggers(),
            truncate_keeps_references("portfolio_posting.transaction_id"),
            pgtrigger.Trigger(
                name="queue_balance_check",
                level=pgtrigger.Statement,
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                referencing=pgtrigger.Referencing(new="new_transactions"),
                func=_TRANSACTIONS_QUEUE_CHECK,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class LedgerCheck(models.Model):
    """The ledger transactions one INSERT statement wrote, whose postings PostgreSQL
    checks at commit: each must have postings, and they must sum to zero per asset.
    The check deletes its row once it passes; a client can neither delete nor change
    one, so a queued check cannot be dodged."""

    transaction_ids = ArrayField(models.BigIntegerField())

    class Meta:
        triggers = [
            pgtrigger.Trigger(
                name="postings_balance_at_commit",
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                timing=pgtrigger.Deferred,
                declare=[
                    ("unbalanced_id", "BIGINT"),
                    ("unbalanced_asset", "BIGINT"),
                    ("unbalanced_sum", "NUMERIC"),
                ],
                func=_TRANSACTIONS_BALANCE,
            ),
            pgtrigger.Protect(name="protect_update", operation=pgtrigger.Update),
            # In a WHEN clause pg_trigger_depth() is the caller's: 0 for a client.
            pgtrigger.Protect(
                name="protect_delete",
                operation=pgtrigger.Delete,
                condition=pgtrigger.Condition("pg_trigger_depth() = 0"),
            ),
        ]

    def __str__(self) -> str:
        return f"check of {len(self.transaction_ids)} ledger transactions"


# Once per INSERT statement over all its postings. It is also the rule of the foreign keys
# to the ledger transaction and to the ledger account: as constraints they cost a
# trigger and a locking lookup per posting at commit, a sixth of a matcher batch's time
# (bench/matcher.py --sql-breakdown); here one join over the statement's rows. Neither
# table allows a DELETE, nor a TRUNCATE that would leave postings naming its rows
# (``truncate_keeps_references``), so a row found here stays, as a constraint keeps it.
_POSTINGS_APPLY = (
    """
    SELECT p.transaction_id, t.id IS NULL INTO bad_id, missing
      FROM new_postings p
      LEFT JOIN portfolio_ledgertransaction t ON t.id = p.transaction_id
     WHERE t.id IS NULL OR t.db_txid <> txid_current()
     LIMIT 1;
    IF FOUND AND missing THEN
        RAISE EXCEPTION 'posting names ledger transaction % that does not exist', bad_id
            USING ERRCODE = 'foreign_key_violation';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'postings may only be added to a ledger transaction in the database '
            'transaction that created it' USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (
        SELECT 1 FROM new_postings p
          JOIN portfolio_ledgeraccount a ON a.id = p.ledger_account_id
          LEFT JOIN exchange_order o ON o.id = p.order_id
          LEFT JOIN exchange_market m ON m.id = o.market_id
         WHERE p.order_id IS NOT NULL
           AND (a.kind <> 'HELD' OR o.account_id IS DISTINCT FROM a.owner_id
                -- a buy holds the quote it pays, a sell the base it delivers
                OR a.asset_id IS DISTINCT FROM
                   CASE WHEN o.side = 'BUY' THEN m.quote_id ELSE m.base_id END)
    ) THEN
        RAISE EXCEPTION 'only a held posting on the order''s own account, in the asset the '
            'order holds, may name an order' USING ERRCODE = 'check_violation';
    END IF;
    -- Counted rather than joined: the function is planned without hash joins (see
    -- PLANNED_BY_INDEX), and a nested loop between the two would be quadratic.
    WITH d AS (SELECT ledger_account_id, sum(amount) AS delta
                 FROM new_postings GROUP BY ledger_account_id),
         moved AS (UPDATE portfolio_ledgeraccount a
                      SET balance = a.balance + d.delta, updated_at = now()
                     FROM d
                    WHERE a.id = d.ledger_account_id
                RETURNING a.id)
    SELECT (SELECT count(*) FROM d) > (SELECT count(*) FROM moved) INTO missing;
    IF missing THEN
        SELECT p.ledger_account_id INTO bad_id
          FROM new_postings p
         WHERE NOT EXISTS (SELECT 1 FROM portfolio_ledgeraccount a
                            WHERE a.id = p.ledger_account_id)
         LIMIT 1;
        RAISE EXCEPTION 'posting names ledger account % that does not exist', bad_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
"""
    + _POSTINGS_QUEUE_CHECK
    + """
    RETURN NULL;
"""
)


class Posting(models.Model):
    """A signed amount on one ledger account. ``order`` names the order a HELD posting
    reserves funds for (or releases them from), so each order's hold is the sum of its
    postings and can be checked against what the order could still cost."""

    # The indexes in Meta serve the foreign keys' lookups; their own would only slow
    # every posting.
    # Both foreign keys' rules are ``apply_to_balances``'s, not constraints'.
    transaction = models.ForeignKey(
        LedgerTransaction,
        on_delete=models.PROTECT,
        related_name="postings",
        db_index=False,
        db_constraint=False,
    )
    ledger_account = models.ForeignKey(
        LedgerAccount,
        on_delete=models.PROTECT,
        related_name="postings",
        db_index=False,
        db_constraint=False,
    )
    amount = AmountField()
    # No foreign key constraint, so the order may move to the archive: ``postings_apply``
    # refuses a posting whose order is not in ``exchange_order`` (or not its owner's).
    order = models.ForeignKey(
        Order,
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        related_name="hold_postings",
        db_index=False,
        db_constraint=False,
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
            # A balance is the sum of its postings.
            truncate_keeps_history(
                "EXISTS (SELECT 1 FROM portfolio_ledgeraccount WHERE balance <> 0)",
                "ledger balances made of its postings remain",
            ),
            pgtrigger.Trigger(
                name="apply_to_balances",
                level=pgtrigger.Statement,
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                referencing=pgtrigger.Referencing(new="new_postings"),
                declare=[("bad_id", "BIGINT"), ("missing", "BOOLEAN")],
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
            # One spelling of a chain transaction's hash, so one event is one row.
            models.CheckConstraint(
                condition=Q(tx_hash__isnull=True) | Q(tx_hash__regex=HASH_REGEX),
                name="vaultop_tx_hash_format",
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
            # A transfer of the token carries its own decimals at most: a withdrawal finer
            # than that could not be sent exactly, and the rest would stay on the ledger
            # as dust the vault does not hold (vault._payable says so first); a deposit
            # finer than that was never received.
            pgtrigger.Trigger(
                name="amount_on_token_step",
                when=pgtrigger.Before,
                operation=pgtrigger.Insert,
                func=(
                    "IF NEW.amount <> round(NEW.amount, (SELECT LEAST(decimals, 8)"
                    " FROM exchange_asset WHERE id = NEW.asset_id)) THEN"
                    " RAISE EXCEPTION '% of % is finer than its token moves', lower(NEW.kind),"
                    " NEW.amount USING ERRCODE = 'check_violation',"
                    " CONSTRAINT = 'vaultop_amount_on_token_step'; END IF; RETURN NEW;"
                ),
            ),
            # A withdrawal starts as a request, whose amount is held: inserted further
            # along, it would be paid from funds nobody held for it.
            pgtrigger.Trigger(
                name="withdrawal_created_requested",
                when=pgtrigger.Before,
                operation=pgtrigger.Insert,
                condition=pgtrigger.Condition(
                    "NEW.kind = 'WITHDRAWAL' AND NEW.status <> 'REQUESTED'"
                ),
                func=(
                    "RAISE EXCEPTION 'withdrawals are created REQUESTED, not %', NEW.status "
                    "USING ERRCODE = 'check_violation'; RETURN NULL;"
                ),
            ),
            # The chain reference, once recorded, is the record of what happened on chain.
            pgtrigger.Trigger(
                name="chain_reference_once",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition(
                    "OLD.tx_hash IS NOT NULL AND (OLD.tx_hash, OLD.log_index, OLD.block_number)"
                    " IS DISTINCT FROM (NEW.tx_hash, NEW.log_index, NEW.block_number)"
                ),
                func=(
                    "RAISE EXCEPTION 'the chain reference of vault operation % is recorded',"
                    " OLD.id USING ERRCODE = 'check_violation'; RETURN NULL;"
                ),
            ),
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
                # As a market's: a rebate within the taker fee, a maker fee within it too.
                condition=Q(
                    taker_fee_rate__gte=0,
                    maker_fee_rate__gte=-F("taker_fee_rate"),
                    maker_fee_rate__lte=F("taker_fee_rate"),
                ),
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
            created_as_trigger(AdjustmentStatus.PENDING, "adjustments"),
            pgtrigger.ReadOnly(
                name="request_read_only",
                fields=["account", "asset", "amount", "reason", "requested_by", "created_at"],
            ),
            pgtrigger.Protect(name="protect_delete", operation=pgtrigger.Delete),
        ]

    def __str__(self) -> str:
        return f"{self.amount:+} {self.asset_id} for {self.account_id} ({self.status})"


# --------------------------------------------------------------------------------------
# Positions and trading statistics
# --------------------------------------------------------------------------------------


class Position(models.Model):
    """A trader's spot inventory of one asset as their trades built it, with its cost in
    the quote asset of the market it trades in (one row per account, asset and quote: on
    a venue whose markets are all quoted in USDC, one per account and asset).

    Written only by ``portfolio.services.positions.positions_apply``, in the transaction
    that settles the trades (the matcher's batch), never by a job that could fall behind.

    Accounting (average cost):

    - ``quantity`` is the base bought minus the base sold through trades, plus
      ``excess_sold``: deposits do not enter a position, so a sale of more than the
      position holds sells inventory whose cost the venue never saw. That excess closes
      the position to zero and is realized at no gain or loss (its proceeds are taken
      as its cost); ``excess_sold`` counts it so that the quantity stays checkable
      against the trades (``ledger_check``).
    - ``cost_basis`` is what the held quantity cost, in quote, **fees excluded**. A buy
      adds its notional; a sale releases the sold share of the basis,
      ``cost_basis × sold / quantity`` (all of it on a full exit). ``cost_basis`` is the
      authoritative figure; ``average_entry_price`` is ``cost_basis / quantity``
      rounded to the price's 8 places, for display.
    - ``fees_paid``: every fee paid on the position's trades, buys and sells (negative
      for net maker rebates), in quote. Fees never enter the cost basis.
    - ``realized_pnl`` is **net of fees**: sale proceeds minus the basis they release,
      minus every fee paid, when it is paid (gross = ``realized_pnl + fees_paid``).

    So that, at any mark, realized P&L + (``quantity × mark − cost_basis``) is exactly
    the change in the value of what the trades moved (the quote paid and received, fees
    included, and the base at the mark): no rounding escapes, because whatever basis a
    sale does not release stays in ``cost_basis``.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="positions")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="positions")
    quote = models.ForeignKey(
        Asset,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The asset cost, P&L and fees are counted in.",
    )
    quantity = AmountField(default=0)
    average_entry_price = PriceField(default=0)
    cost_basis = AmountField(default=0)
    realized_pnl = AmountField(default=0)
    fees_paid = AmountField(default=0)
    excess_sold = AmountField(
        default=0, help_text="Base sold beyond the position: inventory of unknown cost."
    )
    trade_count = models.PositiveBigIntegerField(default=0)
    created_at = CreatedAtField()
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["account", "asset", "quote"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "asset", "quote"], name="position_unique_account_asset"
            ),
            models.CheckConstraint(condition=~Q(asset=F("quote")), name="position_asset_not_quote"),
            models.CheckConstraint(
                condition=Q(
                    quantity__gte=0,
                    cost_basis__gte=0,
                    average_entry_price__gte=0,
                    excess_sold__gte=0,
                ),
                name="position_spot_non_negative",
            ),
            # Nothing held costs nothing.
            models.CheckConstraint(
                condition=~Q(quantity=0) | Q(cost_basis=0, average_entry_price=0),
                name="position_flat_has_no_cost",
            ),
        ]
        triggers = [
            updated_at_stamp(),
            pgtrigger.ReadOnly(name="identity_read_only", fields=["account", "asset", "quote"]),
            pgtrigger.Protect(name="protect_delete", operation=pgtrigger.Delete),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} of asset {self.asset_id} for account {self.account_id}"


class TradingStats(models.Model):
    """One trader's trading in one market on one UTC day, added to by every settled
    trade in the same transaction (``positions_apply``). Volumes are in the base asset
    (``*_volume``) and in the quote (``*_quote_volume``); ``realized_pnl`` is the
    position's realized P&L (net of fees, see ``Position``) booked by that day's trades
    in this market."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="trading_stats")
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="trading_stats")
    day = models.DateField(help_text="UTC date of the trades.")
    buy_volume = AmountField(default=0)
    sell_volume = AmountField(default=0)
    buy_quote_volume = AmountField(default=0)
    sell_quote_volume = AmountField(default=0)
    volume = models.GeneratedField(
        expression=F("buy_volume") + F("sell_volume"),
        output_field=AmountField(),
        db_persist=True,
    )
    quote_volume = models.GeneratedField(
        expression=F("buy_quote_volume") + F("sell_quote_volume"),
        output_field=AmountField(),
        db_persist=True,
    )
    trade_count = models.PositiveIntegerField(default=0)
    maker_count = models.PositiveIntegerField(default=0)
    taker_count = models.PositiveIntegerField(default=0)
    maker_quote_volume = AmountField(default=0)
    taker_quote_volume = AmountField(default=0)
    fees_paid = AmountField(default=0)
    realized_pnl = AmountField(default=0)
    updated_at = UpdatedAtField()

    class Meta:
        ordering = ["account", "market", "-day"]
        verbose_name_plural = "trading stats"
        constraints = [
            models.UniqueConstraint(
                fields=["account", "market", "day"], name="tradingstats_unique_day"
            ),
            models.CheckConstraint(
                condition=Q(
                    buy_volume__gte=0,
                    sell_volume__gte=0,
                    buy_quote_volume__gte=0,
                    sell_quote_volume__gte=0,
                    maker_quote_volume__gte=0,
                    taker_quote_volume__gte=0,
                ),
                name="tradingstats_volumes_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(trade_count=F("maker_count") + F("taker_count")),
                name="tradingstats_maker_taker_split",
            ),
        ]
        indexes = [
            # The fee-tier window: an account's recent days across its markets.
            models.Index(fields=["account", "-day"], name="tradingstats_account_day_idx"),
        ]
        triggers = [
            updated_at_stamp(),
            pgtrigger.ReadOnly(name="identity_read_only", fields=["account", "market", "day"]),
            pgtrigger.Protect(name="protect_delete", operation=pgtrigger.Delete),
        ]

    def __str__(self) -> str:
        return f"account {self.account_id} in market {self.market_id} on {self.day}"


# --------------------------------------------------------------------------------------
# Portfolio snapshots
# --------------------------------------------------------------------------------------


class SnapshotKind(models.TextChoices):
    INTERVAL = "INTERVAL", "Every PORTFOLIO_SNAPSHOT_INTERVAL"
    DAILY = "DAILY", "Daily (UTC)"


class PortfolioSnapshot(models.Model):
    """What an account's portfolio was worth at the end of a period, in one quote asset
    (``PORTFOLIO_QUOTE_ASSET``, USDC), with the deposits and withdrawals made during
    the period: the series performance and risk statistics are computed from
    (``portfolio.metrics``).

    Taken by a periodic task for the period it names: one row per (account, kind,
    period start), so a retried or repeated run changes nothing. Append-only.

    - ``total_value``: every balance (available + held) marked at the last trade price
      of its market against the quote asset (the quote asset at 1); assets with no such
      market, or whose market has not traded, are listed in ``composition`` unmarked
      and left out of the total.
    - ``composition``: ``[{"asset", "quantity", "mark", "value"}, …]`` as decimal
      strings (``mark`` and ``value`` null when unmarked).
    - ``net_flows``: deposits minus withdrawals (and staff adjustments) posted during
      the period, marked like the balances.
    - ``realized_pnl`` (lifetime, net of fees) and ``unrealized_pnl`` of the positions
      quoted in the quote asset, from ``portfolio_valuation``.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=8, choices=SnapshotKind.choices)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    quote = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    total_value = AmountField()
    composition = models.JSONField(default=list)
    net_flows = AmountField(default=0, help_text="Deposits minus withdrawals in the period.")
    realized_pnl = AmountField(null=True, blank=True)
    unrealized_pnl = AmountField(null=True, blank=True)
    taken_at = CreatedAtField()

    class Meta:
        ordering = ["account", "kind", "period_start"]
        constraints = [
            # Also serves the (account, kind) series reads, in time order.
            models.UniqueConstraint(
                fields=["account", "kind", "period_start"], name="portfoliosnapshot_unique_period"
            ),
            models.CheckConstraint(
                condition=Q(period_end__gt=F("period_start")),
                name="portfoliosnapshot_period_forward",
            ),
            models.CheckConstraint(
                condition=Q(total_value__gte=0), name="portfoliosnapshot_value_non_negative"
            ),
        ]
        triggers = append_only_triggers()

    def __str__(self) -> str:
        return f"{self.account_id} {self.kind} {self.period_start:%Y-%m-%d %H:%M}"
