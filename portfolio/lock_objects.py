"""Row locks for money. Always taken in primary-key order, so two transactions that
touch the same accounts queue instead of deadlocking. Querysets are evaluated here:
a lazy ``select_for_update`` takes no lock."""

from collections.abc import Iterable

from django.db import connection

from dex.db import ModelRows
from portfolio.models import LedgerAccount, LedgerAdjustment, VaultOperation
from portfolio.sql import sql_array

_ACCOUNTS = ModelRows(LedgerAccount, "a")
# Written once: every matcher batch and every order placement runs it.
_ACCOUNTS_LOCK = (
    f"SELECT {_ACCOUNTS.columns} FROM {LedgerAccount._meta.db_table} AS a"
    " WHERE a.id = ANY(%s::bigint[]) ORDER BY a.id FOR UPDATE OF a"
)


def ledger_accounts_lock(ids: Iterable[int]) -> dict[int, LedgerAccount]:
    wanted = set(ids)
    if not wanted:
        return {}
    accounts = _ACCOUNTS.fetch_all(connection, _ACCOUNTS_LOCK, [sql_array(wanted)])
    return {account.pk: account for account in accounts}


# One trader's accounts in one asset (an order placement's available and held) found
# and locked by their keys in one statement, without first asking for their ids: half
# the PostgreSQL time of the two (a join to the keys unnested cost more than both).
_TRADER_ACCOUNTS_LOCK = (
    f"SELECT {_ACCOUNTS.columns} FROM {LedgerAccount._meta.db_table} AS a"
    " WHERE a.kind = ANY(%s::text[]) AND a.asset_id = %s AND a.owner_id = %s"
    "   AND a.market_id IS NULL"
    " ORDER BY a.id FOR UPDATE OF a"
)


def trader_accounts_lock(kinds: Iterable[str], asset_id: int, owner_id: int) -> list[LedgerAccount]:
    """Lock ``owner_id``'s accounts of ``kinds`` in ``asset_id`` that exist, in
    primary-key order; a kind without an account is left out."""
    return _ACCOUNTS.fetch_all(
        connection, _TRADER_ACCOUNTS_LOCK, [sql_array(set(kinds)), asset_id, owner_id]
    )


def vault_operation_lock(pk: int) -> VaultOperation:
    return VaultOperation.objects.select_for_update(of=("self",)).get(pk=pk)


def adjustment_lock(pk: int) -> LedgerAdjustment:
    return LedgerAdjustment.objects.select_for_update(of=("self",)).get(pk=pk)
