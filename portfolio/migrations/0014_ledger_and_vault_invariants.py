"""The ledger and vault rules of this version (see the models), and one spelling of a
chain transaction's hash.

Hashes the previous version stored as given are rewritten first: 64 hex digits, in any
case, with or without ``0x``, become ``0x`` and lower case. A hash that is not one, or two
deposits of one chain event spelt two ways (one event credited twice), fails the
migration, which then changes nothing: correct them and run it again.
"""

import pgtrigger.compiler
import pgtrigger.migrations
from django.conf import settings
from django.db import migrations, models

# dex.db.PLANNED_BY_INDEX, as it stood: a migration keeps the SQL it ran. The posting
# trigger's function is created again below, without the settings 0011 gave it.
PLANNED_BY_INDEX = (
    "ALTER FUNCTION pgtrigger_apply_to_balances_b6ffc()"
    " SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off"
)

NORMALIZE_TX_HASHES = """
UPDATE portfolio_vaultoperation
   SET tx_hash = '0x' || lower(right(tx_hash, 64))
 WHERE tx_hash ~* '^(0x)?[0-9a-f]{64}$' AND tx_hash <> '0x' || lower(right(tx_hash, 64))
"""


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0019_signed_amend_nonce"),
        ("portfolio", "0013_withdrawal_on_token_step"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Run last when this migration is reversed: the posting function the reversal
        # installs again gets the planner settings 0011 gave it.
        migrations.RunSQL(migrations.RunSQL.noop, reverse_sql=PLANNED_BY_INDEX),
        migrations.RunSQL(NORMALIZE_TX_HASHES, reverse_sql=migrations.RunSQL.noop),
        pgtrigger.migrations.RemoveTrigger(
            model_name="posting",
            name="apply_to_balances",
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name="vaultoperation",
            name="withdrawal_on_token_step",
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="ledgeraccount",
            trigger=pgtrigger.compiler.Trigger(
                name="opens_empty",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    condition="WHEN (NEW.balance <> 0)",
                    func="RAISE EXCEPTION 'ledger account opened holding %: balances come only from postings', NEW.balance USING ERRCODE = 'check_violation'; RETURN NULL;",
                    hash="37cb267a2c439b211f2aa5459308e5fbf004c906",
                    operation="INSERT",
                    pgid="pgtrigger_opens_empty_28d5a",
                    table="portfolio_ledgeraccount",
                    when="BEFORE",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="ledgeradjustment",
            trigger=pgtrigger.compiler.Trigger(
                name="created_pending",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    condition="WHEN (NEW.status <> 'PENDING')",
                    func="RAISE EXCEPTION 'adjustments are created PENDING, not %', NEW.status USING ERRCODE = 'check_violation'; RETURN NULL;",
                    hash="88df253dc2098a67cc7dd9883cd67f31ea93bd89",
                    operation="INSERT",
                    pgid="pgtrigger_created_pending_b752c",
                    table="portfolio_ledgeradjustment",
                    when="BEFORE",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="posting",
            trigger=pgtrigger.compiler.Trigger(
                name="apply_to_balances",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    declare="DECLARE bad_id BIGINT; missing BOOLEAN;",
                    func="\n    SELECT p.transaction_id, t.id IS NULL INTO bad_id, missing\n      FROM new_postings p\n      LEFT JOIN portfolio_ledgertransaction t ON t.id = p.transaction_id\n     WHERE t.id IS NULL OR t.db_txid <> txid_current()\n     LIMIT 1;\n    IF FOUND AND missing THEN\n        RAISE EXCEPTION 'posting names ledger transaction % that does not exist', bad_id\n            USING ERRCODE = 'foreign_key_violation';\n    ELSIF FOUND THEN\n        RAISE EXCEPTION 'postings may only be added to a ledger transaction in the database '\n            'transaction that created it' USING ERRCODE = 'check_violation';\n    END IF;\n    IF EXISTS (\n        SELECT 1 FROM new_postings p\n          JOIN portfolio_ledgeraccount a ON a.id = p.ledger_account_id\n          LEFT JOIN exchange_order o ON o.id = p.order_id\n          LEFT JOIN exchange_market m ON m.id = o.market_id\n         WHERE p.order_id IS NOT NULL\n           AND (a.kind <> 'HELD' OR o.account_id IS DISTINCT FROM a.owner_id\n                -- a buy holds the quote it pays, a sell the base it delivers\n                OR a.asset_id IS DISTINCT FROM\n                   CASE WHEN o.side = 'BUY' THEN m.quote_id ELSE m.base_id END)\n    ) THEN\n        RAISE EXCEPTION 'only a held posting on the order''s own account, in the asset the '\n            'order holds, may name an order' USING ERRCODE = 'check_violation';\n    END IF;\n    -- Counted rather than joined: the function is planned without hash joins (see\n    -- PLANNED_BY_INDEX), and a nested loop between the two would be quadratic.\n    WITH d AS (SELECT ledger_account_id, sum(amount) AS delta\n                 FROM new_postings GROUP BY ledger_account_id),\n         moved AS (UPDATE portfolio_ledgeraccount a\n                      SET balance = a.balance + d.delta, updated_at = now()\n                     FROM d\n                    WHERE a.id = d.ledger_account_id\n                RETURNING a.id)\n    SELECT (SELECT count(*) FROM d) > (SELECT count(*) FROM moved) INTO missing;\n    IF missing THEN\n        SELECT p.ledger_account_id INTO bad_id\n          FROM new_postings p\n         WHERE NOT EXISTS (SELECT 1 FROM portfolio_ledgeraccount a\n                            WHERE a.id = p.ledger_account_id)\n         LIMIT 1;\n        RAISE EXCEPTION 'posting names ledger account % that does not exist', bad_id\n            USING ERRCODE = 'foreign_key_violation';\n    END IF;\n\n    INSERT INTO portfolio_ledgercheck (transaction_ids)\n    SELECT array_agg(q.id)\n      FROM (SELECT DISTINCT transaction_id AS id FROM new_postings\n            EXCEPT\n            SELECT unnest(c.transaction_ids) FROM portfolio_ledgercheck c) q\n    HAVING count(*) > 0;\n\n    RETURN NULL;\n",
                    hash="5f729308bc93e79ee0ee44f1f02daaa2d3598530",
                    level="STATEMENT",
                    operation="INSERT",
                    pgid="pgtrigger_apply_to_balances_b6ffc",
                    referencing="REFERENCING NEW TABLE AS new_postings ",
                    table="portfolio_posting",
                    when="AFTER",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="vaultoperation",
            trigger=pgtrigger.compiler.Trigger(
                name="amount_on_token_step",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func="IF NEW.amount <> round(NEW.amount, (SELECT LEAST(decimals, 8) FROM exchange_asset WHERE id = NEW.asset_id)) THEN RAISE EXCEPTION '% of % is finer than its token moves', lower(NEW.kind), NEW.amount USING ERRCODE = 'check_violation', CONSTRAINT = 'vaultop_amount_on_token_step'; END IF; RETURN NEW;",
                    hash="89df612f1ebbf4a7f7b933cc1b39e416ffcacad3",
                    operation="INSERT",
                    pgid="pgtrigger_amount_on_token_step_c1de5",
                    table="portfolio_vaultoperation",
                    when="BEFORE",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="vaultoperation",
            trigger=pgtrigger.compiler.Trigger(
                name="withdrawal_created_requested",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    condition="WHEN (NEW.kind = 'WITHDRAWAL' AND NEW.status <> 'REQUESTED')",
                    func="RAISE EXCEPTION 'withdrawals are created REQUESTED, not %', NEW.status USING ERRCODE = 'check_violation'; RETURN NULL;",
                    hash="e55f2d150cedfa9e3c5262fd9d1438261b4430ee",
                    operation="INSERT",
                    pgid="pgtrigger_withdrawal_created_requested_f3eec",
                    table="portfolio_vaultoperation",
                    when="BEFORE",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="vaultoperation",
            trigger=pgtrigger.compiler.Trigger(
                name="chain_reference_once",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    condition="WHEN (OLD.tx_hash IS NOT NULL AND (OLD.tx_hash, OLD.log_index, OLD.block_number) IS DISTINCT FROM (NEW.tx_hash, NEW.log_index, NEW.block_number))",
                    func="RAISE EXCEPTION 'the chain reference of vault operation % is recorded', OLD.id USING ERRCODE = 'check_violation'; RETURN NULL;",
                    hash="04b11c7a9adb67cbbac7f255e6c9bf39a4698ff8",
                    operation="UPDATE",
                    pgid="pgtrigger_chain_reference_once_ad277",
                    table="portfolio_vaultoperation",
                    when="BEFORE",
                ),
            ),
        ),
        migrations.AddConstraint(
            model_name="vaultoperation",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("tx_hash__isnull", True),
                    ("tx_hash__regex", "^0x[0-9a-f]{64}$"),
                    _connector="OR",
                ),
                name="vaultop_tx_hash_format",
            ),
        ),
        migrations.RunSQL(PLANNED_BY_INDEX, reverse_sql=migrations.RunSQL.noop),
    ]
