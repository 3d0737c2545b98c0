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


# Traders' accounts found and locked by their keys in one statement: an order placement
# takes its two accounts' locks without first asking for their ids.
_TRADER_ACCOUNTS_LOCK = (
    f"SELECT {_ACCOUNTS.columns} FROM {LedgerAccount._meta.db_table} AS a"
    " JOIN unnest(%s::text[], %s::bigint[], %s::bigint[]) AS k(kind, asset_id, owner_id)"
    "   ON a.kind = k.kind AND a.asset_id = k.asset_id AND a.owner_id = k.owner_id"
    "  AND a.market_id IS NULL"
    " ORDER BY a.id FOR UPDATE OF a"
)


def trader_accounts_lock(keys: Iterable[tuple[str, int, int]]) -> list[LedgerAccount]:
    """Lock the traders' accounts of ``keys`` (kind, asset, owner) that exist, in
    primary-key order; a key without an account is left out."""
    kinds, assets, owners = [], [], []
    for kind, asset, owner in keys:
        kinds.append(kind)
        assets.append(asset)
        owners.append(owner)
    if not kinds:
        return []
    return _ACCOUNTS.fetch_all(
        connection,
        _TRADER_ACCOUNTS_LOCK,
        [sql_array(kinds), sql_array(assets), sql_array(owners)],
    )


def vault_operation_lock(pk: int) -> VaultOperation:
    return VaultOperation.objects.select_for_update(of=("self",)).get(pk=pk)


def adjustment_lock(pk: int) -> LedgerAdjustment:
    return LedgerAdjustment.objects.select_for_update(of=("self",)).get(pk=pk)
