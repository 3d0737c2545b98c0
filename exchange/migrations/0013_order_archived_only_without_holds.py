"""An order leaves the live table for the archive only once nothing is held for it (the
sum of its hold postings is zero), so the archive never takes money with it."""

import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0012_orders_move_to_archive"),
        ("portfolio", "0007_order_references_without_constraint"),
    ]

    operations = [
        pgtrigger.migrations.RemoveTrigger(
            model_name="order",
            name="delete_only_archived",
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="order",
            trigger=pgtrigger.compiler.Trigger(
                name="delete_only_archived",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func="\n    IF NOT EXISTS (\n        SELECT 1 FROM exchange_orderarchive a\n         WHERE a.order_id = OLD.id\n           AND to_jsonb(a) - 'order_id' - 'archived_at' = to_jsonb(OLD) - 'id'\n    ) THEN\n        RAISE EXCEPTION 'order % cannot be deleted: an order leaves exchange_order only for '\n            'the archive, with its final state copied there first', OLD.id\n            USING ERRCODE = 'restrict_violation';\n    END IF;\n    -- Nor while money is held for it: a finished order's hold was released in full.\n    IF (SELECT sum(p.amount) FROM portfolio_posting p WHERE p.order_id = OLD.id) <> 0 THEN\n        RAISE EXCEPTION 'order % cannot be archived: funds are still held for it', OLD.id\n            USING ERRCODE = 'restrict_violation';\n    END IF;\n    RETURN OLD;\n",
                    hash="64941a3a8d1bde6d095638d54cae02bf4503d200",
                    operation="DELETE",
                    pgid="pgtrigger_delete_only_archived_006d9",
                    table="exchange_order",
                    when="BEFORE",
                ),
            ),
        ),
    ]
