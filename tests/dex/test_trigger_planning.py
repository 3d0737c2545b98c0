"""Trigger functions that join a statement's rows with growing tables read those tables
by index, however small they were when the function was first planned
(dex.db.PLANNED_BY_INDEX)."""

import pytest
from django.db import connection

from dex.db import PLANNED_BY_INDEX
from portfolio.models import LedgerAccount, LedgerAccountKind, LedgerTransaction
from tests.portfolio import sim
from tests.sql import sql

# (table, trigger name) of every trigger planned so.
PLANNED = {
    ("portfolio_posting", "apply_to_balances"),
    ("exchange_trade", "parties_match_orders"),
}


def _function_settings() -> dict[tuple[str, str], list[str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, t.tgname, coalesce(p.proconfig, '{}')"
            "  FROM pg_trigger t"
            "  JOIN pg_class c ON c.oid = t.tgrelid"
            "  JOIN pg_proc p ON p.oid = t.tgfoid"
            " WHERE t.tgname LIKE 'pgtrigger_%%'"
        )
        return {
            (table, name.removeprefix("pgtrigger_").rsplit("_", 1)[0]): settings
            for table, name, settings in cursor.fetchall()
        }


@pytest.mark.django_db
def test_the_migrations_leave_each_planned_trigger_function_with_its_settings():
    settings = _function_settings()
    expected = sorted(f"{name}=off" for name in PLANNED_BY_INDEX)
    for trigger in PLANNED:
        # A changed trigger is installed by CREATE OR REPLACE FUNCTION, which drops the
        # settings: its migration must set them again (see dex.db.PLANNED_BY_INDEX).
        assert sorted(settings[trigger]) == expected, trigger
    # Nothing else carries them: a trigger joining two transition tables needs hash joins.
    others = {t for t, s in settings.items() if s and t not in PLANNED}
    assert not others


def _sequential_scans() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, seq_scan FROM pg_stat_xact_user_tables"
            " WHERE relname IN ('exchange_order', 'portfolio_ledgertransaction',"
            " 'portfolio_ledgeraccount')"
        )
        return dict(cursor.fetchall())


@pytest.mark.django_db
def test_a_posting_statement_reads_orders_and_ledger_rows_by_index(market, buyer, quote):
    # Tables of a few rows, as a new venue's: left to its costs, the planner reads such
    # tables whole, and PL/pgSQL would keep that plan as they grow.
    order = sim.place(buyer, market, "BUY", "1", "100")
    held = LedgerAccount.objects.get(kind=LedgerAccountKind.HELD, asset=quote, owner=buyer)
    available = LedgerAccount.objects.get(
        kind=LedgerAccountKind.AVAILABLE, asset=quote, owner=buyer
    )
    held_before, available_before = held.balance, available.balance
    txn = LedgerTransaction.objects.create(kind="RELEASE", idempotency_key="planning")
    before = _sequential_scans()
    sql(
        "INSERT INTO portfolio_posting (transaction_id, ledger_account_id, amount, order_id)"
        " VALUES (%s, %s, -1, %s), (%s, %s, 1, NULL)",
        [txn.pk, held.pk, order.pk, txn.pk, available.pk],
    )
    assert _sequential_scans() == before
    # The statement did its work: the balances moved.
    held.refresh_from_db()
    available.refresh_from_db()
    assert (held.balance, available.balance) == (held_before - 1, available_before + 1)
