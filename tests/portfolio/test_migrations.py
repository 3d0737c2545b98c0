"""Migrations of the ledger and vault, on data an earlier version wrote. Each test
migrates inside the test's transaction (PostgreSQL's DDL is transactional), so the
schema is as it was once that transaction rolls back."""

from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor

from portfolio.models import VaultOperation
from portfolio.services.vault import deposit_credit
from tests.sql import sql

pytestmark = pytest.mark.django_db

BEFORE_ONE_SPELLING = ("portfolio", "0013_withdrawal_on_token_step")
PLANNED_BY_INDEX = ["enable_hashjoin=off", "enable_mergejoin=off", "enable_seqscan=off"]


class _Undo(Exception):
    """Leaves the block's transaction, and what it migrated, rolled back."""


def _migrate(*targets) -> None:
    # PostgreSQL alters no table with deferred trigger events pending (the fixtures'
    # balance checks): run them now, as a commit would.
    sql("SET CONSTRAINTS ALL IMMEDIATE")
    MigrationExecutor(connection).migrate(list(targets))


def _latest() -> tuple[str, str]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes("portfolio")[0]


def _function_settings(name: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(proconfig, '{}') FROM pg_proc WHERE proname = %s", [name])
        return sorted(cursor.fetchone()[0])


def _rolled_back(body):
    """``body()``'s result, with everything it did (migrations included) rolled back."""
    result = []
    try:
        with transaction.atomic():
            result.append(body())
            raise _Undo
    except _Undo:
        pass
    return result[0]


def test_deposits_an_earlier_version_stored_without_0x_are_spelt_once_and_found(buyer, quote):
    """An earlier version stored a deposit's hash as given (a chain watcher may pass it
    without ``0x``, or in upper case): the migration spells it as the service does
    now, and the same event reported again is that deposit, not a second credit."""
    digits = "ab" * 32
    ours = VaultOperation.objects.filter(tx_hash__iendswith=digits)

    def migrate_then_report_again():
        _migrate(BEFORE_ONE_SPELLING)
        for log_index, spelt in enumerate((digits, "0X" + digits.upper())):
            sql(
                "INSERT INTO portfolio_vaultoperation (account_id, asset_id, kind, status,"
                " amount, balance_after, idempotency_key, destination_address, tx_hash,"
                " log_index, block_number, reason, completed_at)"
                " VALUES (%s, %s, 'DEPOSIT', 'COMPLETED', 25, 25, %s, '', %s, %s, 10, '',"
                " now())",
                [buyer.pk, quote.pk, f"deposit:{spelt}:{log_index}", spelt, log_index],
            )
        _migrate(_latest())
        spelt = sorted(ours.values_list("tx_hash", "log_index"))
        again = deposit_credit(
            account=buyer,
            asset=quote,
            amount=Decimal(25),
            tx_hash=digits,
            log_index=0,
            block_number=10,
        )
        return spelt, again.idempotency_key, ours.count()

    # Rolled back with the test's transaction (deposit_credit is durable: no block of
    # this test's own around it).
    spelt, key, count = migrate_then_report_again()
    assert spelt == [("0x" + digits, 0), ("0x" + digits, 1)]
    assert key == f"deposit:{digits}:0"  # the earlier version's row, found by its event
    assert count == 2


def test_rolling_the_ledger_back_keeps_the_posting_functions_planner_settings():
    """Each migration that installs the posting trigger again sets the planner settings
    of dex.db.PLANNED_BY_INDEX on its function; reversed, the function the reversal
    installs gets them back too."""
    function = "pgtrigger_apply_to_balances_b6ffc"
    assert _function_settings(function) == PLANNED_BY_INDEX

    def rolled_back_settings():
        _migrate(BEFORE_ONE_SPELLING)
        return _function_settings(function)

    assert _rolled_back(rolled_back_settings) == PLANNED_BY_INDEX
    assert _function_settings(function) == PLANNED_BY_INDEX
