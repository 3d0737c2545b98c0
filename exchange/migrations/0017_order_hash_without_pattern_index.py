"""Order hashes stay unique, under the same constraint, without the LIKE-prefix index
(``varchar_pattern_ops``) that ``unique=True`` adds on PostgreSQL: nothing looks hashes
up by prefix, and every order written paid for it (see ``Order.Meta``).

Only the index is dropped, concurrently: the unique constraint is the one already there,
now declared in ``Meta``, so the table is not rewritten nor its uniqueness re-checked.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("exchange", "0016_ordercommand_pending_by_id"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="order",
                    name="order_hash",
                    field=models.CharField(max_length=66),
                ),
                migrations.AddConstraint(
                    model_name="order",
                    constraint=models.UniqueConstraint(
                        fields=("order_hash",), name="exchange_order_order_hash_key"
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "DROP INDEX CONCURRENTLY IF EXISTS exchange_order_order_hash_7ce08210_like",
                    reverse_sql=(
                        "CREATE INDEX CONCURRENTLY exchange_order_order_hash_7ce08210_like"
                        " ON exchange_order USING btree (order_hash varchar_pattern_ops)"
                    ),
                ),
            ],
        ),
    ]
