"""Row-level security for the portfolio's derived tables, and the markets' last prices
for the trader API's valuations.

- ``portfolio_position``, ``portfolio_tradingstats`` and ``portfolio_portfoliosnapshot``
  hold one trader's figures per row: under the API's role (``dex_api``) a policy shows
  the caller's rows alone, as ``compliance.0002_row_level_security`` does for orders,
  trades and the ledger.
- ``exchange_candle`` is public market data: readable in full.
- ``market_last_price``: each market's last trade price. Valuations mark positions at
  it, but under the API's role ``exchange_trade`` shows only the caller's own trades,
  so a mark read from it would be the caller's last fill (or none at all for a trader
  who has not traded). The price is public (the ticker serves it), the trades are not:
  this view runs as its owner (not ``security_invoker``; the owner is not subject to
  RLS, which is enabled and not forced), reads the latest trade of each market and
  hands out the price and nothing else of it.
"""

from django.conf import settings
from django.db import migrations

ROLE = '"{}"'.format(settings.API_DB_ROLE.replace('"', '""'))
POLICY = "dex_api_own_rows"
ACCOUNT = "NULLIF(current_setting('dex.account_id', true), '')::bigint"

OWN_ROWS = {
    "portfolio_position": f"account_id = {ACCOUNT}",
    "portfolio_tradingstats": f"account_id = {ACCOUNT}",
    "portfolio_portfoliosnapshot": f"account_id = {ACCOUNT}",
}

LAST_PRICE_VIEW = "market_last_price"

CREATE_VIEW = f"""
CREATE VIEW {LAST_PRICE_VIEW} AS
SELECT m.id AS market_id, m.base_id, m.quote_id,
       (SELECT t.price FROM exchange_trade t
         WHERE t.market_id = m.id ORDER BY t.sequence DESC LIMIT 1) AS last_price
  FROM exchange_market m;
"""

READABLE = [*OWN_ROWS, "exchange_candle", LAST_PRICE_VIEW]

GRANT = [f"GRANT SELECT ON {table} TO {ROLE};" for table in READABLE]
REVOKE = [f"REVOKE ALL ON {table} FROM {ROLE};" for table in READABLE]

ENABLE = [
    sql
    for table, condition in OWN_ROWS.items()
    for sql in (
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;",
        f"CREATE POLICY {POLICY} ON {table} FOR SELECT TO {ROLE} USING ({condition});",
    )
]

DISABLE = [
    sql
    for table in OWN_ROWS
    for sql in (
        f"DROP POLICY {POLICY} ON {table};",
        f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;",
    )
]


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0002_row_level_security"),
        ("exchange", "0007_candles_order_archive_snapshot_periods"),
        ("portfolio", "0005_portfoliosnapshot"),
    ]

    operations = [
        migrations.RunSQL(CREATE_VIEW, reverse_sql=f"DROP VIEW {LAST_PRICE_VIEW};"),
        migrations.RunSQL(GRANT, reverse_sql=REVOKE),
        migrations.RunSQL(ENABLE, reverse_sql=DISABLE),
    ]
