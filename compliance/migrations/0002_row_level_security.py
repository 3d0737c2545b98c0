"""PostgreSQL row-level security for the trader API.

Trader reads run under the role named by ``settings.API_DB_ROLE`` (``dex_api``) with
the caller's account id in the transaction setting ``dex.account_id``
(``dex.api.rls.rls_scope``). The role may only read, and on every table that holds a
trader's data a policy shows it the rows of that account alone, so a query that forgot
``dex.api.scoping.for_account`` still returns nothing that is not the caller's.

RLS is enabled but not forced: the tables' owner (the app's own user, which migrates
and runs the matcher and the services) is not subject to it. A missing or empty
setting matches no row, and is not an error.

Roles belong to the cluster, not the database, so the role is created only if it is
missing and is never dropped: other databases of the cluster (test databases among
them) may be using it. Reversing drops this database's policies and grants.
"""

from django.conf import settings
from django.db import migrations

ROLE = '"{}"'.format(settings.API_DB_ROLE.replace('"', '""'))
ROLE_LITERAL = "'{}'".format(settings.API_DB_ROLE.replace("'", "''"))
POLICY = "dex_api_own_rows"

# The caller's account id; NULL (so no row matches) when it is not set.
ACCOUNT = "NULLIF(current_setting('dex.account_id', true), '')::bigint"

# Each table that holds a trader's data, and which of its rows the caller owns.
# Other traders' accounts and orders are hidden too: a trade names its counterparty,
# and the API must not hand that out.
OWN_ROWS = {
    "exchange_account": f"id = {ACCOUNT}",
    "exchange_apikey": f"account_id = {ACCOUNT}",
    "exchange_order": f"account_id = {ACCOUNT}",
    "exchange_orderstatushistory": (
        "EXISTS (SELECT 1 FROM exchange_order o"
        f" WHERE o.id = exchange_orderstatushistory.order_id AND o.account_id = {ACCOUNT})"
    ),
    "exchange_trade": f"buyer_id = {ACCOUNT} OR seller_id = {ACCOUNT}",
    # Venue accounts (fees, vault, adjustments) have no owner, so no trader sees them.
    "portfolio_ledgeraccount": f"owner_id = {ACCOUNT}",
    "portfolio_posting": (
        "ledger_account_id IN "
        f"(SELECT a.id FROM portfolio_ledgeraccount a WHERE a.owner_id = {ACCOUNT})"
    ),
    # A ledger transaction is the caller's when one of its postings is.
    "portfolio_ledgertransaction": (
        "EXISTS (SELECT 1 FROM portfolio_posting p"
        " JOIN portfolio_ledgeraccount a ON a.id = p.ledger_account_id"
        f" WHERE p.transaction_id = portfolio_ledgertransaction.id AND a.owner_id = {ACCOUNT})"
    ),
    "portfolio_vaultoperation": f"account_id = {ACCOUNT}",
}

# Reference data every trader may read in full.
REFERENCE = [
    "exchange_asset",
    "exchange_market",
    "portfolio_feetier",
    "portfolio_withdrawallimit",
]

# A view over the ledger accounts: as the invoker, it shows the caller only what the
# ledger accounts' policy lets them see.
VIEWS = ["portfolio_balance"]

READABLE = [*OWN_ROWS, *REFERENCE, *VIEWS]

CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {ROLE_LITERAL}) THEN
        CREATE ROLE {ROLE} NOLOGIN;
    END IF;
    -- The app's user must be able to SET ROLE to it. A superuser always can; another
    -- user needs the membership (on PostgreSQL 16, one that grants SET).
    BEGIN
        SET LOCAL ROLE {ROLE};
        SET LOCAL ROLE NONE;
    EXCEPTION WHEN insufficient_privilege THEN
        GRANT {ROLE} TO CURRENT_USER;
    END;
END
$$;
"""

GRANT = [
    f"DO $$ BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO {ROLE}', current_schema()); END $$;",
    *(f"GRANT SELECT ON {table} TO {ROLE};" for table in READABLE),
]

REVOKE = [
    *(f"REVOKE ALL ON {table} FROM {ROLE};" for table in READABLE),
    f"DO $$ BEGIN EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {ROLE}', current_schema()); "
    "END $$;",
]

ENABLE = [
    *(
        sql
        for table, condition in OWN_ROWS.items()
        for sql in (
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;",
            f"CREATE POLICY {POLICY} ON {table} FOR SELECT TO {ROLE} USING ({condition});",
        )
    ),
    *(f"ALTER VIEW {view} SET (security_invoker = true);" for view in VIEWS),
]

DISABLE = [
    *(f"ALTER VIEW {view} RESET (security_invoker);" for view in VIEWS),
    *(
        sql
        for table in OWN_ROWS
        for sql in (
            f"DROP POLICY {POLICY} ON {table};",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;",
        )
    ),
]


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0001_initial"),
        ("exchange", "0005_order_checks_history_per_statement_fewer_indexes"),
        ("portfolio", "0002_ledger_check_per_statement_fewer_indexes"),
    ]

    operations = [
        migrations.RunSQL(CREATE_ROLE, reverse_sql=migrations.RunSQL.noop),
        migrations.RunSQL(GRANT, reverse_sql=REVOKE),
        migrations.RunSQL(ENABLE, reverse_sql=DISABLE),
    ]
