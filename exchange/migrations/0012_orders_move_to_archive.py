"""Orders that finished long ago move to ``exchange_orderarchive``.

History tables name orders without foreign key constraints; the database keeps the rule
with triggers instead (``exchange.models.order_references_check``, the trade parties
check, the ledger's checks): new rows name live-table orders, an order leaves the live
table only after its final state is archived, and the archive keeps every row. An
archived order's nonce, hash and client order id stay taken.
"""

import django.db.models.deletion
import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations, models

DROP_ARCHIVE_FOREIGN_KEY = """
DO $$
DECLARE name text;
BEGIN
    FOR name IN SELECT conname FROM pg_constraint
                 WHERE conrelid = 'exchange_orderarchive'::regclass AND contype = 'f'
    LOOP
        EXECUTE format('ALTER TABLE exchange_orderarchive DROP CONSTRAINT %I', name);
    END LOOP;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0011_order_created_brin"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="orderstatushistory",
            options={"ordering": ["order_id", "id"], "verbose_name_plural": "order status history"},
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name="order",
            name="protect_delete",
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name="trade",
            name="parties_match_orders",
        ),
        # The archive keeps its order_id column and primary key; only the foreign key
        # constraint to exchange_order goes (an archived order is no longer there), and
        # Django's state sees a plain integer key instead of a relation.
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(DROP_ARCHIVE_FOREIGN_KEY, reverse_sql=migrations.RunSQL.noop),
            ],
            state_operations=[
                migrations.RemoveField(model_name="orderarchive", name="order"),
                migrations.AddField(
                    model_name="orderarchive",
                    name="order_id",
                    field=models.BigIntegerField(primary_key=True, serialize=False),
                    preserve_default=False,
                ),
            ],
        ),
        migrations.AlterField(
            model_name="ordercommand",
            name="order",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="commands",
                to="exchange.order",
            ),
        ),
        migrations.AlterField(
            model_name="orderstatushistory",
            name="order",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="status_history",
                to="exchange.order",
            ),
        ),
        migrations.AlterField(
            model_name="trade",
            name="maker_order",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="maker_trades",
                to="exchange.order",
            ),
        ),
        migrations.AlterField(
            model_name="trade",
            name="taker_order",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="taker_trades",
                to="exchange.order",
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="order",
            trigger=pgtrigger.compiler.Trigger(
                name="delete_only_archived",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func="\n    IF NOT EXISTS (\n        SELECT 1 FROM exchange_orderarchive a\n         WHERE a.order_id = OLD.id\n           AND to_jsonb(a) - 'order_id' - 'archived_at' = to_jsonb(OLD) - 'id'\n    ) THEN\n        RAISE EXCEPTION 'order % cannot be deleted: an order leaves exchange_order only for '\n            'the archive, with its final state copied there first', OLD.id\n            USING ERRCODE = 'restrict_violation';\n    END IF;\n    RETURN OLD;\n",
                    hash="e448d8555847c12eac1dee1b92b7713a5c393688",
                    operation="DELETE",
                    pgid="pgtrigger_delete_only_archived_006d9",
                    table="exchange_order",
                    when="BEFORE",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="order",
            trigger=pgtrigger.compiler.Trigger(
                name="unique_with_archive",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func="\n    IF EXISTS (SELECT 1 FROM exchange_orderarchive a\n                WHERE a.account_id = NEW.account_id AND a.nonce = NEW.nonce) THEN\n        RAISE EXCEPTION 'nonce % of account % was used by an archived order',\n            NEW.nonce, NEW.account_id\n            USING ERRCODE = 'unique_violation', CONSTRAINT = 'order_unique_nonce';\n    END IF;\n    IF EXISTS (SELECT 1 FROM exchange_orderarchive a\n                WHERE a.account_id = NEW.account_id\n                  AND a.client_order_id = NEW.client_order_id) THEN\n        RAISE EXCEPTION 'client order id % of account % names an archived order',\n            NEW.client_order_id, NEW.account_id\n            USING ERRCODE = 'unique_violation', CONSTRAINT = 'order_unique_client_order_id';\n    END IF;\n    IF EXISTS (SELECT 1 FROM exchange_orderarchive a WHERE a.order_hash = NEW.order_hash) THEN\n        RAISE EXCEPTION 'order hash % belongs to an archived order', NEW.order_hash\n            USING ERRCODE = 'unique_violation', CONSTRAINT = 'exchange_order_order_hash_key';\n    END IF;\n    RETURN NULL;\n",
                    hash="f590912499da3d924a9ede6c42feb71fdffb1197",
                    operation="INSERT",
                    pgid="pgtrigger_unique_with_archive_1b400",
                    table="exchange_order",
                    when="AFTER",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="ordercommand",
            trigger=pgtrigger.compiler.Trigger(
                name="order_references",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func='IF EXISTS (SELECT 1 FROM new_rows n WHERE (n."order_id" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM exchange_order o WHERE o.id = n."order_id"))) THEN RAISE EXCEPTION \'insert on table "%" names an order that is not in exchange_order\', TG_TABLE_NAME USING ERRCODE = \'foreign_key_violation\'; END IF; RETURN NULL;',
                    hash="56a653fec00384768609d186a3c9dbe5b045e231",
                    level="STATEMENT",
                    operation="INSERT",
                    pgid="pgtrigger_order_references_ad711",
                    referencing="REFERENCING NEW TABLE AS new_rows ",
                    table="exchange_ordercommand",
                    when="AFTER",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="orderstatushistory",
            trigger=pgtrigger.compiler.Trigger(
                name="order_references",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func='IF EXISTS (SELECT 1 FROM new_rows n WHERE (n."order_id" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM exchange_order o WHERE o.id = n."order_id"))) THEN RAISE EXCEPTION \'insert on table "%" names an order that is not in exchange_order\', TG_TABLE_NAME USING ERRCODE = \'foreign_key_violation\'; END IF; RETURN NULL;',
                    hash="da7527657c0ff942e5fb1fdfbf3759993e393da1",
                    level="STATEMENT",
                    operation="INSERT",
                    pgid="pgtrigger_order_references_4d077",
                    referencing="REFERENCING NEW TABLE AS new_rows ",
                    table="exchange_orderstatushistory",
                    when="AFTER",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="trade",
            trigger=pgtrigger.compiler.Trigger(
                name="parties_match_orders",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    declare="DECLARE bad BIGINT; missing BOOLEAN; other_market BOOLEAN; sides BOOLEAN;",
                    func="\n    SELECT t.id,\n           m.market_id IS NULL OR k.market_id IS NULL,\n           m.market_id <> t.market_id OR k.market_id <> t.market_id,\n           k.side <> t.aggressor_side OR m.side = k.side\n      INTO bad, missing, other_market, sides\n      FROM new_trades t\n      LEFT JOIN LATERAL (SELECT market_id, account_id, side FROM exchange_order\n                          WHERE id = t.maker_order_id) m ON true\n      LEFT JOIN LATERAL (SELECT market_id, account_id, side FROM exchange_order\n                          WHERE id = t.taker_order_id) k ON true\n     WHERE m.market_id IS NULL OR k.market_id IS NULL\n        OR m.market_id <> t.market_id OR k.market_id <> t.market_id\n        OR k.side <> t.aggressor_side OR m.side = k.side\n        OR (t.aggressor_side = 'BUY'\n            AND (t.buyer_id <> k.account_id OR t.seller_id <> m.account_id))\n        OR (t.aggressor_side = 'SELL'\n            AND (t.seller_id <> k.account_id OR t.buyer_id <> m.account_id))\n     LIMIT 1;\n    IF NOT FOUND THEN\n        RETURN NULL;\n    ELSIF missing THEN\n        RAISE EXCEPTION 'trade % names an order that is not in exchange_order', bad\n            USING ERRCODE = 'foreign_key_violation';\n    ELSIF other_market THEN\n        RAISE EXCEPTION 'trade % joins orders from another market', bad\n            USING ERRCODE = 'check_violation';\n    ELSIF sides THEN\n        RAISE EXCEPTION 'trade % sides disagree with its orders', bad\n            USING ERRCODE = 'check_violation';\n    END IF;\n    RAISE EXCEPTION 'trade % buyer/seller disagree with its orders'' accounts', bad\n        USING ERRCODE = 'check_violation';\n",
                    hash="2b00c123f8d20bf80794ddab6e90a5a1a21c5e02",
                    level="STATEMENT",
                    operation="INSERT",
                    pgid="pgtrigger_parties_match_orders_25281",
                    referencing="REFERENCING NEW TABLE AS new_trades ",
                    table="exchange_trade",
                    when="AFTER",
                ),
            ),
        ),
        migrations.AddConstraint(
            model_name="orderarchive",
            constraint=models.UniqueConstraint(
                fields=("account_id", "nonce"), name="orderarchive_unique_nonce"
            ),
        ),
        migrations.AddConstraint(
            model_name="orderarchive",
            constraint=models.UniqueConstraint(
                fields=("account_id", "client_order_id"), name="orderarchive_unique_client_order_id"
            ),
        ),
        migrations.AddConstraint(
            model_name="orderarchive",
            constraint=models.UniqueConstraint(
                fields=("order_hash",), name="orderarchive_unique_hash"
            ),
        ),
    ]
