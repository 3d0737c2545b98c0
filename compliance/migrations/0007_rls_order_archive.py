"""Row-level security for the order archive: under the API's role (``dex_api``) a trader
reads their own archived orders alone, as ``0002_row_level_security`` does for live
orders."""

from django.conf import settings
from django.db import migrations

ROLE = '"{}"'.format(settings.API_DB_ROLE.replace('"', '""'))
POLICY = "dex_api_own_rows"
ACCOUNT = "NULLIF(current_setting('dex.account_id', true), '')::bigint"
TABLE = "exchange_orderarchive"


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0006_roles"),
        ("exchange", "0012_orders_move_to_archive"),
    ]

    operations = [
        migrations.RunSQL(
            [
                f"GRANT SELECT ON {TABLE} TO {ROLE};",
                f"ALTER TABLE {TABLE} ENABLE ROW LEVEL SECURITY;",
                f"CREATE POLICY {POLICY} ON {TABLE} FOR SELECT TO {ROLE}"
                f" USING (account_id = {ACCOUNT});",
            ],
            reverse_sql=[
                f"DROP POLICY {POLICY} ON {TABLE};",
                f"ALTER TABLE {TABLE} DISABLE ROW LEVEL SECURITY;",
                f"REVOKE ALL ON {TABLE} FROM {ROLE};",
            ],
        ),
    ]
