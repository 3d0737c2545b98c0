from django.db import migrations

# dex.db.PLANNED_BY_INDEX, as it stood: a migration keeps the SQL it ran.
PLANNED_BY_INDEX = (
    "ALTER FUNCTION pgtrigger_parties_match_orders_25281()"
    " SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off"
)


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0014_references_kept_on_truncate"),
    ]

    operations = [
        migrations.RunSQL(
            PLANNED_BY_INDEX,
            reverse_sql="ALTER FUNCTION pgtrigger_parties_match_orders_25281() RESET ALL",
        ),
    ]
